import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { DEV_ENV, startAuthServer, type RunningAuthServer } from '../src/harness/system.js';

/** The issuer as clients reach it through a (TLS-terminating) load balancer: not the address the tests use. */
const ISSUER = 'https://auth.metadata.test';
const METADATA_PATHS = ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration'];
const CALLER_BASIC = `Basic ${Buffer.from(`demo-caller:${DEV_ENV['DEMO_CALLER_SECRET']!}`).toString('base64')}`;

/** GET with headers fetch() would not send as given (Host). */
function get(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = request({ host: '127.0.0.1', port, path, headers: { connection: 'close', ...headers } }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode!, body: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    outgoing.on('error', reject);
    outgoing.end();
  });
}

describe('auth-server: metadata from ISSUER, only what it does, strict token requests', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let base: string;

  /** A raw token request: the body is sent as written, so parameters can repeat. */
  async function token(body: string, options: { query?: string; authorization?: string } = {}) {
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    if (options.authorization !== undefined) headers['authorization'] = options.authorization;
    const response = await fetch(`${base}/token${options.query ?? ''}`, { method: 'POST', headers, body });
    return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, unknown> };
  }

  before(async () => {
    dataDir = await temporaryDirectory('auth-metadata');
    auth = await startAuthServer({ dataDir: dataDir.path, env: { ISSUER } });
    base = `http://127.0.0.1:${auth.port}`;
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  it('builds every URL of both metadata documents from ISSUER, whatever Host and X-Forwarded-* say', async () => {
    const forged: Record<string, string>[] = [
      {},
      { host: 'evil.example' },
      { host: 'evil.example:8443', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'http', 'x-forwarded-port': '80', forwarded: 'host=evil.example;proto=http' },
    ];
    for (const path of METADATA_PATHS) {
      for (const headers of forged) {
        const { status, body } = await get(auth.port, path, headers);
        assert.equal(status, 200, `${path} with ${JSON.stringify(headers)}`);
        assert.doesNotMatch(body, /evil\.example|127\.0\.0\.1/, `${path} with ${JSON.stringify(headers)}`);
        const metadata = JSON.parse(body) as Record<string, unknown>;
        assert.equal(metadata['issuer'], ISSUER);
        assert.equal(metadata['token_endpoint'], `${ISSUER}/token`);
        assert.equal(metadata['jwks_uri'], `${ISSUER}/jwks`);
        const urls = Object.values(metadata).filter((value): value is string => typeof value === 'string' && /^[a-z]+:\/\//.test(value));
        assert.ok(urls.every((url) => url === ISSUER || url.startsWith(`${ISSUER}/`)), `${path}: ${urls.join(', ')}`);
      }
    }
  });

  it('advertises only the token endpoint, the JWKS, client credentials, its client authentication, the predictor scopes and DPoP', async () => {
    const expected = {
      issuer: ISSUER,
      token_endpoint: `${ISSUER}/token`,
      jwks_uri: `${ISSUER}/jwks`,
      scopes_supported: ['predict', 'models:read'],
      response_types_supported: [],
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['ES256', 'EdDSA', 'PS256', 'RS256'],
      dpop_signing_alg_values_supported: ['ES256', 'EdDSA', 'Ed25519', 'PS256'],
    };
    for (const path of METADATA_PATHS) {
      const { status, body } = await get(auth.port, path);
      assert.equal(status, 200);
      assert.deepEqual(JSON.parse(body), expected, path);
    }
  });

  it('answers 404 at the authorization endpoint and the other browser endpoints, as at any unknown path', async () => {
    for (const path of ['/auth?client_id=demo-caller&response_type=code&redirect_uri=https%3A%2F%2Fclient.example%2Fcb&scope=openid', '/auth', '/session/end', '/me', '/reg', '/request', '/token/introspection', '/token/revocation', '/no-such-path']) {
      const { status } = await get(auth.port, path);
      assert.equal(status, 404, path);
    }
    const post = await fetch(`${base}/auth`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'client_id=demo-caller&response_type=code' });
    assert.equal(post.status, 404);
    assert.equal((await get(auth.port, '/jwks')).status, 200, 'the JWKS is still served');
  });

  it('refuses an unknown scope with 400 invalid_scope, alone, beside a known one, and openid', async () => {
    for (const scope of ['admin', 'predict admin', 'openid', 'predict openid']) {
      const { status, body } = await token(`grant_type=client_credentials&scope=${encodeURIComponent(scope)}`, { authorization: CALLER_BASIC });
      assert.equal(status, 400, scope);
      assert.equal(body['error'], 'invalid_scope', scope);
      assert.equal(body['access_token'], undefined, scope);
    }
    const { status, body } = await token('grant_type=client_credentials&scope=predict', { authorization: CALLER_BASIC });
    assert.equal(status, 200);
    assert.equal(decodeJwt(body['access_token'] as string)['scope'], 'predict');
    // An empty scope is an absent one (as oidc-provider reads every parameter): the registered scopes.
    const empty = await token('grant_type=client_credentials&scope=', { authorization: CALLER_BASIC });
    assert.equal(decodeJwt(empty.body['access_token'] as string)['scope'], 'predict models:read');
  });

  it('refuses grant_type or scope given twice, in the body, in the query or in both, with 400 invalid_request', async () => {
    const cases = [
      { body: 'grant_type=client_credentials&grant_type=client_credentials&scope=predict' },
      { body: 'grant_type=client_credentials&scope=predict&scope=predict' },
      { body: 'grant_type=client_credentials&scope=predict&scope=models%3Aread' },
      { body: 'grant_type=client_credentials', query: '?scope=predict&scope=predict' },
      { body: 'grant_type=client_credentials', query: '?grant_type=client_credentials&grant_type=client_credentials' },
      { body: 'grant_type=client_credentials&scope=predict', query: '?scope=predict' },
      { body: 'grant_type=client_credentials&scope=predict', query: '?grant_type=client_credentials' },
    ];
    for (const { body: form, query } of cases) {
      const { status, body } = await token(form, { authorization: CALLER_BASIC, ...(query ? { query } : {}) });
      assert.equal(status, 400, `${form} ${query ?? ''}`);
      assert.equal(body['error'], 'invalid_request', `${form} ${query ?? ''}`);
      assert.match(body['error_description'] as string, /must not be provided twice/);
    }
    // Once in the query and not in the body is not a repetition (the default scope is the server's, not the client's).
    const once = await token('grant_type=client_credentials', { authorization: CALLER_BASIC, query: '?scope=predict' });
    assert.equal(once.status, 200);
  });

  it('answers 401 invalid_client with a Basic challenge to a token request without any client authentication', async () => {
    const { status, headers, body } = await token('grant_type=client_credentials&scope=predict');
    assert.equal(status, 401);
    assert.equal(body['error'], 'invalid_client');
    assert.equal(headers.get('www-authenticate'), `Basic realm="${ISSUER}"`);
    assert.equal(headers.get('cache-control'), 'no-store');
    // A client_id without its secret was already 401 invalid_client (oidc-provider).
    const named = await token('grant_type=client_credentials&client_id=demo-caller');
    assert.equal(named.status, 401);
    assert.equal(named.body['error'], 'invalid_client');
  });
});
