// A gateway written with openid-client: it discovers Writ (RFC 8414), exchanges an agent's
// JWT-SVID for a Txn-Token (RFC 8693) and revokes a token it obtained (RFC 7009).
//
//   node gateway.mjs exchange   prints {"metadata": ..., "token": <token response>}
//   node gateway.mjs revoke     revokes $TOKEN, prints {"revoked": true}
//
// Environment: WRIT_ISSUER, GATEWAY_ID, AGENT_SVID, TOKEN (revoke), SCOPE, TRUST_DOMAIN, and
// how the gateway authenticates: GATEWAY_KEY_FILE (a private JWK with its kid, registered
// with --auth-method private_key_jwt) or GATEWAY_SVID (its own JWT-SVID, jwt-spiffe).
// WRIT_ALLOW_HTTP=1 allows a plain-http issuer (dev mode only).
import { readFileSync } from 'node:fs'
import * as client from 'openid-client'
import { importJWK } from 'jose'

const env = process.env
const TXN_TOKEN = 'urn:ietf:params:oauth:token-type:txn_token'

// draft-ietf-oauth-spiffe-client-auth: the gateway's JWT-SVID (aud = Writ's issuer) is the
// client assertion. openid-client takes any function as the client authentication method.
function jwtSpiffe(svid) {
  return (_as, _client, body) => {
    body.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe')
    body.set('client_assertion', svid)
  }
}

async function clientAuth() {
  if (env.GATEWAY_KEY_FILE) {
    const jwk = JSON.parse(readFileSync(env.GATEWAY_KEY_FILE, 'utf8'))
    return client.PrivateKeyJwt({ key: await importJWK(jwk, jwk.alg ?? 'ES256'), kid: jwk.kid })
  }
  return jwtSpiffe(env.GATEWAY_SVID)
}

async function connect() {
  // Writ has no OpenID Connect discovery document: algorithm 'oauth2' reads RFC 8414's
  // /.well-known/oauth-authorization-server instead of /.well-known/openid-configuration
  const options = { algorithm: 'oauth2' }
  if (env.WRIT_ALLOW_HTTP === '1') options.execute = [client.allowInsecureRequests]
  return client.discovery(new URL(env.WRIT_ISSUER), env.GATEWAY_ID, undefined,
    await clientAuth(), options)
}

async function exchange(config) {
  const token = await client.genericGrantRequest(config,
    'urn:ietf:params:oauth:grant-type:token-exchange', {
      subject_token: env.AGENT_SVID,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      requested_token_type: TXN_TOKEN,
      audience: env.TRUST_DOMAIN,
      scope: env.SCOPE,
      request_details: JSON.stringify({ intent: 'summarise the inbox' }),
    })
  return { metadata: config.serverMetadata(), token }
}

async function revoke(config) {
  await client.tokenRevocation(config, env.TOKEN, { token_type_hint: 'access_token' })
  return { revoked: true }
}

const commands = { exchange, revoke }
try {
  const config = await connect()
  console.log(JSON.stringify(await commands[process.argv[2]](config)))
} catch (err) {
  // an OAuth error answer: its code and status, never the request
  console.log(JSON.stringify({ failed: err.name, error: err.error, status: err.status,
    code: err.code, message: err.message }))
  process.exitCode = 1
}
