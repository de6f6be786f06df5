import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { startTypeScript, stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { DEV_ENV, requestToken, startAuthServer, TEST_AUDIENCE, type RunningAuthServer } from '../src/harness/system.js';

describe('auth-server', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;

  before(async () => {
    dataDir = await temporaryDirectory('auth-server');
    auth = await startAuthServer({ dataDir: dataDir.path, env: { ACCESS_TOKEN_TTL: '120' } });
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  it('publishes RFC 8414 and OpenID metadata offering only client credentials', async () => {
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
      const metadata = (await (await fetch(`${auth.issuer}${path}`)).json()) as Record<string, unknown>;
      assert.equal(metadata['issuer'], auth.issuer);
      assert.deepEqual(metadata['grant_types_supported'], ['client_credentials']);
      assert.deepEqual(metadata['token_endpoint_auth_methods_supported'], ['client_secret_basic', 'client_secret_post', 'private_key_jwt']);
      assert.equal(metadata['jwks_uri'], `${auth.issuer}/jwks`);
    }
  });

  it('issues demo-caller an RFC 9068 token: at+jwt, published kid, predictor audience, registered scopes, TTL, plan', async () => {
    const { status, body } = await requestToken(auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!, { scope: 'predict models:read' });
    assert.equal(status, 200);
    const token = body['access_token'] as string;
    const header = decodeProtectedHeader(token);
    const claims = decodeJwt(token);
    assert.equal(header.typ, 'at+jwt');
    assert.equal(header.alg, 'ES256');
    const jwks = (await (await fetch(`${auth.issuer}/jwks`)).json()) as { keys: { kid: string; d?: string }[] };
    assert.ok(jwks.keys.some((key) => key.kid === header.kid), 'the kid is in the JWKS');
    assert.ok(jwks.keys.every((key) => key.d === undefined), 'the JWKS holds no private parts');
    assert.equal(claims.aud, TEST_AUDIENCE);
    assert.equal(claims.iss, auth.issuer);
    assert.equal(claims.sub, 'demo-caller');
    assert.equal(claims['client_id'], 'demo-caller');
    assert.equal(claims['scope'], 'predict models:read');
    assert.equal(claims['plan'], 'standard');
    assert.equal(typeof claims.jti, 'string');
    assert.equal(claims.exp! - claims.iat!, 120);
    assert.equal(body['expires_in'], 120);
  });

  it('gives a client that sends no resource a token for the predictor anyway', async () => {
    const { body } = await requestToken(auth.issuer, 'demo-free', DEV_ENV['DEMO_FREE_SECRET']!, { scope: 'predict' });
    assert.equal(decodeJwt(body['access_token'] as string).aud, TEST_AUDIENCE);
    assert.equal(decodeJwt(body['access_token'] as string)['plan'], 'free');
  });

  it('refuses a resource other than the predictor with invalid_target', async () => {
    const { status, body } = await requestToken(auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!, { scope: 'predict', resource: 'https://elsewhere.example' });
    assert.equal(status, 400);
    assert.equal(body['error'], 'invalid_target');
  });

  it('answers 400 invalid_scope when demo-readonly asks for predict', async () => {
    const { status, body } = await requestToken(auth.issuer, 'demo-readonly', DEV_ENV['DEMO_READONLY_SECRET']!, { scope: 'predict' });
    assert.equal(status, 400);
    assert.equal(body['error'], 'invalid_scope');
  });

  it('answers 401 invalid_client for a wrong secret and for an unknown client', async () => {
    for (const [clientId, secret] of [['demo-caller', 'wrong-secret'], ['nobody', 'whatever']] as const) {
      const { status, body } = await requestToken(auth.issuer, clientId, secret, { scope: 'predict' });
      assert.equal(status, 401);
      assert.equal(body['error'], 'invalid_client');
    }
  });

  it('answers JSON errors even to a client that asks for HTML', async () => {
    const response = await fetch(`${auth.issuer}/token`, { method: 'POST', headers: { accept: 'text/html' } });
    assert.match(response.headers.get('content-type') ?? '', /application\/json/);
    assert.equal(((await response.json()) as { error: string }).error, 'invalid_request');
  });

  it('keeps its signing key across a restart: a token issued before still verifies after', async () => {
    const { body } = await requestToken(auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!, { scope: 'predict' });
    const before = decodeProtectedHeader(body['access_token'] as string).kid;
    const first = await startAuthServer({ dataDir: dataDir.path });
    const jwksBefore = await (await fetch(`${first.issuer}/jwks`)).json();
    await first.process.stop();
    const second = await startAuthServer({ dataDir: dataDir.path });
    const jwksAfter = (await (await fetch(`${second.issuer}/jwks`)).json()) as { keys: { kid: string }[] };
    assert.deepEqual(jwksAfter, jwksBefore);
    assert.ok(jwksAfter.keys.some((key) => key.kid === before));
    await second.process.stop();
  });
});

describe('auth-server with NODE_ENV=production', () => {
  it('exits non-zero with a one-line reason on the dev credentials', async () => {
    const dataDir = await temporaryDirectory('auth-prod');
    const server = startTypeScript('auth-server', 'auth-server/src/main.ts', { ...DEV_ENV, NODE_ENV: 'production', AUTH_PORT: '0', DATA_DIR: dataDir.path });
    const { code } = await server.exited;
    await dataDir.remove();
    assert.notEqual(code, 0);
    const reasons = server.stderrLines.filter((line) => line.startsWith('auth-server:'));
    assert.deepEqual(reasons, ['auth-server: DEMO_CALLER_SECRET is a dev credential (dev.env); refusing to start with NODE_ENV=production']);
    assert.equal(server.stdoutLines.length, 0);
  });

  it('exits non-zero without explicit key material', async () => {
    const dataDir = await temporaryDirectory('auth-prod');
    const clients = `${dataDir.path}/clients.json`;
    const { writeFile } = await import('node:fs/promises');
    await writeFile(clients, JSON.stringify({ clients: [{ client_id: 'svc', client_secret: 'a-production-secret-of-forty-characters!', scope: 'predict', plan: 'standard' }] }));
    const server = startTypeScript('auth-server', 'auth-server/src/main.ts', { NODE_ENV: 'production', AUTH_PORT: '0', DATA_DIR: dataDir.path, CLIENTS_FILE: clients });
    const { code } = await server.exited;
    await dataDir.remove();
    assert.notEqual(code, 0);
    assert.match(server.stderrLines.join('\n'), /^auth-server: no signing keys at .*production needs explicit key material/m);
  });
});

describe('auth-server in production with explicit keys and clients', () => {
  it('starts on keys made by keys:generate and a clients file, and issues tokens', async () => {
    const dataDir = await temporaryDirectory('auth-prod');
    const { writeFile, stat } = await import('node:fs/promises');
    const keysFile = `${dataDir.path}/keys.json`;
    const generate = startTypeScript('keys:generate', 'auth-server/src/keys/keys-generate.ts', {}, [keysFile]);
    assert.equal((await generate.exited).code, 0);
    assert.equal((await stat(keysFile)).mode & 0o777, 0o600);
    const clients = `${dataDir.path}/clients.json`;
    const secret = 'a-production-secret-of-forty-characters!';
    await writeFile(clients, JSON.stringify({ clients: [{ client_id: 'svc', client_secret: secret, scope: 'predict', plan: 'standard' }] }));
    const auth = await startAuthServer({ dataDir: dataDir.path, env: { NODE_ENV: 'production', SIGNING_KEYS_FILE: keysFile, CLIENTS_FILE: clients, DEMO_CALLER_SECRET: '', DEMO_READONLY_SECRET: '', DEMO_FREE_SECRET: '', ADMIN_TOKEN: '' } });
    const { status } = await requestToken(auth.issuer, 'svc', secret, { scope: 'predict' });
    assert.equal(status, 200);
    await auth.process.stop();
    await dataDir.remove();
  });
});

describe('auth-server default scope', () => {
  it('grants the registered scopes when a token request names none (RFC 6749 section 3.3)', async () => {
    const dataDir = await temporaryDirectory('auth-default-scope');
    const auth = await startAuthServer({ dataDir: dataDir.path });
    const { body } = await requestToken(auth.issuer, 'demo-readonly', DEV_ENV['DEMO_READONLY_SECRET']!);
    assert.equal(decodeJwt(body['access_token'] as string)['scope'], 'models:read');
    const post = await fetch(`${auth.issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'demo-caller', client_secret: DEV_ENV['DEMO_CALLER_SECRET']! }),
    });
    assert.equal(decodeJwt(((await post.json()) as { access_token: string }).access_token)['scope'], 'predict models:read');
    await stopAll();
    await dataDir.remove();
  });
});
