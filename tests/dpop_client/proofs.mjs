// DPoP proofs for the tests, made by panva's `dpop` (the client) and `jose` (for proofs that
// break one rule at a time). One JSON request per line on stdin, one JSON answer per line.
import * as readline from 'node:readline'
import { calculateThumbprint, generateKeyPair, generateProof } from 'dpop'
import { exportJWK, SignJWT } from 'jose'

const keys = []

async function handle(request) {
  switch (request.op) {
    case 'key': {
      const pair = await generateKeyPair(request.alg, { extractable: true })
      keys.push({ alg: request.alg, pair })
      return {
        id: keys.length - 1,
        jkt: await calculateThumbprint(pair.publicKey),
        jwk: await exportJWK(pair.publicKey),
        privateJwk: await exportJWK(pair.privateKey),
      }
    }
    case 'proof': {
      const { pair } = keys[request.key]
      const proof = await generateProof(
        pair, request.htu, request.htm, request.nonce ?? undefined,
        request.accessToken ?? undefined,
      )
      return { proof }
    }
    case 'craft': {
      // Header and claims exactly as given (the test breaks one rule); signed by the key, or
      // by an HMAC secret; `crit` names the extensions jose is to let through.
      const signer = request.secret
        ? new TextEncoder().encode(request.secret)
        : keys[request.key].pair.privateKey
      const proof = await new SignJWT(request.claims)
        .setProtectedHeader(request.header)
        .sign(signer, request.crit ? { crit: request.crit } : undefined)
      return { proof }
    }
    default:
      throw new Error(`unknown op ${request.op}`)
  }
}

const lines = readline.createInterface({ input: process.stdin })
for await (const line of lines) {
  let answer
  try {
    answer = await handle(JSON.parse(line))
  } catch (error) {
    answer = { error: String(error) }
  }
  process.stdout.write(JSON.stringify(answer) + '\n')
}
