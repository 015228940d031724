-- wrk script: every request presents a refresh token never presented before.
-- Usage: wrk -t T -c C -d D -s refresh.lua URL -- TOKENS_FILE T
-- A line of TOKENS_FILE is a token, or a token, a tab and a DPoP proof sent as header "DPoP"
-- with it (each proof is single-use too: the server keeps its jti).
-- Thread i takes lines i, i+T, i+2T, ...; when a thread runs out it starts over and counts
-- a wrap (the harness treats a run with wraps as invalid: rotation would refuse the repeats).
-- done() prints one line "BENCH_RESULT {json}" for the harness.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local tokens = {}
local proofs = {}
local position = 0
local stride = 1
wraps = 0

function init(args)
  local path = args[1]
  stride = tonumber(args[2]) or 1
  local index = 0
  for line in io.lines(path) do
    if index % stride == id then
      local token, proof = line:match("^([^\t]*)\t(.*)$")
      tokens[#tokens + 1] = token or line
      proofs[#tokens] = proof
    end
    index = index + 1
  end
  if #tokens == 0 then
    error("no tokens for thread " .. id .. " in " .. path)
  end
end

function request()
  position = position + 1
  if position > #tokens then
    position = 1
    wraps = wraps + 1
  end
  local body = '{"refreshToken":"' .. tokens[position] .. '"}'
  local headers = { ["Content-Type"] = "application/json" }
  headers["DPoP"] = proofs[position]
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local total_wraps = 0
  for _, thread in ipairs(threads) do
    total_wraps = total_wraps + (thread:get("wraps") or 0)
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"mean_us":%.1f,"max_us":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_timeout":%d,"non_2xx":%d,"wraps":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    errors.connect, errors.read, errors.write, errors.timeout, errors.status, total_wraps))
end
