-- wrk script: GET with one access token, the first line of TOKENS_FILE, on every request.
-- Usage: wrk -t T -c C -d D -s guarded.lua URL -- TOKENS_FILE
-- done() prints "BENCH_RESULT {json}" as refresh.lua does (no wraps: tokens are reused).

local token

function init(args)
  token = io.lines(args[1])()
end

function request()
  return wrk.format("GET", nil, { Authorization = "Bearer " .. token })
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"mean_us":%.1f,"max_us":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_timeout":%d,"non_2xx":%d,"wraps":0}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    errors.connect, errors.read, errors.write, errors.timeout, errors.status))
end
