// A real OpenID Connect issuer for MedBridge's tests: oidc-provider issuing JWT access
// tokens by client_credentials, for one audience (the FHIR base URL under test).
// Usage: node provider.mjs PORT AUDIENCE   (prints one JSON line once it listens)
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, audience] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-1', use: 'sig', alg: 'RS256' };
const scopes = 'system/*.rs patient/*.rs user/*.rs';

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
  jwks: { keys: [jwk] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (resource !== audience) throw new Error(`unknown resource ${resource}`);
        return { scope: scopes, audience, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
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
  extraParams: ['fhir_user', 'patient'],
});
provider.proxy = false;
const server = provider.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ issuer, audience }) + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
