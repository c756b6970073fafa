// A resource server asks Writ whether a token is active (RFC 7662), with openid-client and
// RFC 7523 private_key_jwt client authentication.
//
//   TOKEN=<token> node introspect.mjs   prints the introspection response
//
// Environment: WRIT_ISSUER, RS_ID, RS_KEY_FILE (a private JWK with its kid), TOKEN,
// WRIT_ALLOW_HTTP=1 for a plain-http issuer (dev mode only).
import { readFileSync } from 'node:fs'
import * as client from 'openid-client'
import { importJWK } from 'jose'

const env = process.env
try {
  const jwk = JSON.parse(readFileSync(env.RS_KEY_FILE, 'utf8'))
  const auth = client.PrivateKeyJwt({ key: await importJWK(jwk, jwk.alg ?? 'ES256'), kid: jwk.kid })
  const options = { algorithm: 'oauth2' }  // RFC 8414 discovery
  if (env.WRIT_ALLOW_HTTP === '1') options.execute = [client.allowInsecureRequests]
  const config = await client.discovery(new URL(env.WRIT_ISSUER), env.RS_ID, undefined, auth, options)
  console.log(JSON.stringify(await client.tokenIntrospection(config, env.TOKEN)))
} catch (err) {
  console.log(JSON.stringify({ failed: err.name, error: err.error, status: err.status,
    code: err.code, message: err.message }))
  process.exitCode = 1
}
