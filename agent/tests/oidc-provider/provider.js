// A certified OpenID Provider (oidc-provider, OpenID Certified) for the tests: back-channel
// logout on, RP-initiated logout on, JWT access tokens for one resource server, dev
// interactions (a login form that takes any user name). Prints one JSON line
// {"issuer": ...} once listening on 127.0.0.1; every back-channel outcome the provider emits
// afterwards is printed as a JSON line {"event": "backchannel.success" | "backchannel.error", ...}.
//
// Usage: node provider.js JWKS_OUT [sid]
// Prints {"issuer", "jwks"} once listening (the public keys are written to JWKS_OUT too), then
// reads the client's back-channel logout URI as one line on stdin and starts answering.
// With `sid`, access tokens carry the session id.
'use strict';

const crypto = require('node:crypto');
const http = require('node:http');
const { Provider } = require('oidc-provider');

const [jwksOut, withSid] = process.argv.slice(2);
const RESOURCE = 'https://api.shop.example';

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'op-1', use: 'sig', alg: 'RS256' };
const { n, e } = jwk;
require('node:fs').writeFileSync(jwksOut, JSON.stringify({ keys: [{ kty: 'RSA', n, e, kid: 'op-1', use: 'sig', alg: 'RS256' }] }));

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  console.log(JSON.stringify({ issuer, jwks: `${issuer}/jwks` }));
  require('node:readline').createInterface({ input: process.stdin }).once('line', (line) => start(issuer, line.trim()));
});

function start(issuer, logoutUri) {
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'shop',
      client_secret: 'shop-secret-0123456789abcdef',
      redirect_uris: ['http://127.0.0.1/callback'],
      post_logout_redirect_uris: ['http://127.0.0.1/bye'],
      backchannel_logout_uri: logoutUri,
      backchannel_logout_session_required: true,
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    jwks: { keys: [jwk] },
    pkce: { required: () => false },
    features: {
      devInteractions: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'api',
          audience: RESOURCE,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    // Operators who want session logouts to match access tokens add the session id to them
    // (oidc-provider's JWT access tokens carry none by default).
    extraTokenClaims: async (ctx, token) => (withSid === 'sid' && token.sid ? { sid: token.sid } : undefined),
    // First-party client: the grant is given without a consent screen.
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid');
      grant.addResourceScope(RESOURCE, 'api');
      await grant.save();
      return grant;
    },
    findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  });
  provider.on('backchannel.success', (ctx, client, accountId, sid) => {
    console.log(JSON.stringify({ event: 'backchannel.success', client: client.clientId, sub: accountId, sid }));
  });
  provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
    console.log(JSON.stringify({ event: 'backchannel.error', error: String(err), client: client.clientId, sub: accountId, sid }));
  });
  server.on('request', provider.callback());
  console.log(JSON.stringify({ started: true }));
}
