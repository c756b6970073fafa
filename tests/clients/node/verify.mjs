// A downstream service verifies a Txn-Token offline with jose: Writ's JWKS, its issuer, the
// trust domain as audience and the Txn-Token media type.
//
//   TOKEN=<token> node verify.mjs   prints {"header": ..., "payload": ...}
//
// Environment: JWKS_URI, WRIT_ISSUER, TRUST_DOMAIN, TOKEN, and TYP to expect another type.
import { createRemoteJWKSet, jwtVerify } from 'jose'

const env = process.env
try {
  const keys = createRemoteJWKSet(new URL(env.JWKS_URI))
  const { payload, protectedHeader } = await jwtVerify(env.TOKEN, keys, {
    issuer: env.WRIT_ISSUER,
    audience: env.TRUST_DOMAIN,
    typ: env.TYP ?? 'txntoken+jwt',
    algorithms: ['ES256', 'ES384', 'RS256', 'PS256', 'Ed25519', 'EdDSA'],
  })
  console.log(JSON.stringify({ header: protectedHeader, payload }))
} catch (err) {
  console.log(JSON.stringify({ failed: err.name, code: err.code, message: err.message }))
  process.exitCode = 1
}
