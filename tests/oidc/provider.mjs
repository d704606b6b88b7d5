// A real OpenID Connect issuer for MedBridge's tests: oidc-provider issuing JWT access
// tokens by client_credentials (RFC 9068, typ at+jwt), each for one of the audiences
// (resource indicators) it is started with; the first is the default.
// Usage: node provider.mjs PORT AUDIENCE [AUDIENCE...]   (prints one JSON line once it listens)
// A token request may add `patient` and `fhir_user` (claims, as a SMART-aware issuer
// would), `ttl` (seconds, default 600: the tests' expired tokens) and `alg=ES256` (signed
// with the issuer's P-256 key instead of its RSA key).
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, ...audiences] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
// a fresh key and kid at every start, as an issuer rotating its key: a restart on the
// same port is a key rotation the resource server must notice by the unknown kid
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const kid = randomUUID();
const jwk = { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
const ecJwk = { ...ec.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'ES256' };
const scopes = 'system/*.cruds system/*.rs patient/*.rs user/*.rs';

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'medbridge-test',
    client_secret: 'medbridge-test-secret',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: scopes,
  }],
  scopes: scopes.split(' '),
  jwks: { keys: [jwk, ecJwk] },
  ttl: {
    ClientCredentials: (ctx) => Number(ctx.oidc.body?.ttl) || 600,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audiences[0],
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (!audiences.includes(resource)) throw new Error(`unknown resource ${resource}`);
        // RS256 unless the token request asks for `alg=ES256`
        const alg = ctx.oidc.body?.alg === 'ES256' ? 'ES256' : 'RS256';
        return { scope: scopes, audience: resource, accessTokenFormat: 'jwt', jwt: { sign: { alg } } };
      },
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const body = (ctx.oidc && (ctx.oidc.body || ctx.oidc.params)) || {};
    const extra = {};
    if (body.fhir_user) extra.fhirUser = body.fhir_user;
    if (body.patient) extra.patient = body.patient;
    return extra;
  },
  extraParams: ['fhir_user', 'patient', 'ttl', 'alg'],
});
provider.proxy = false;
const server = provider.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ issuer, audience: audiences[0], kid }) + '\n');
});
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections(); // keep-alive peers would hold the port past the stop
});
