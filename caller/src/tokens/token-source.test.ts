import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { sendJson, startStubIssuer, startStubServer } from '../testing/stub-server.js';
import { TokenRequestError } from './token-errors.js';
import { TokenSource } from './token-source.js';
import { ManualClock } from '../testing/manual-clock.js';

const stubs: { close: () => Promise<void> }[] = [];
after(() => Promise.all(stubs.map((stub) => stub.close())));

async function issuer(options: Parameters<typeof startStubIssuer>[0] = {}) {
  const stub = await startStubIssuer(options);
  stubs.push(stub);
  return stub;
}


/** Resolves once `condition` holds, polling on the event loop (no fixed sleeps). */
async function eventually(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setImmediate(resolve));
}

describe('TokenSource', () => {
  it('sends one token request for 50 concurrent callers on an empty cache', async () => {
    const stub = await issuer();
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's' });
    const results = await Promise.all(Array.from({ length: 50 }, () => tokens.getToken()));
    assert.equal(stub.tokenRequests(), 1);
    assert.equal(new Set(results.map((token) => token.value)).size, 1);
  });

  it('serves the cached token, then refreshes in the background inside the 70-85% window', async () => {
    const stub = await issuer({ expiresIn: 100 });
    const clock = new ManualClock();
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's', clock, random: () => 0.5 });
    const first = await tokens.getToken();
    assert.equal(Math.round(first.refreshAt - first.expiresAt), -22_500, 'refresh at 77.5% of 100 s');
    clock.advance(77_000);
    assert.equal((await tokens.getToken()).value, 'tok-1');
    assert.equal(stub.tokenRequests(), 1);
    clock.advance(1_000); // past refreshAt, before expiry
    assert.equal((await tokens.getToken()).value, 'tok-1', 'callers keep the valid token while the refresh runs');
    await eventually(async () => (await tokens.getToken()).value === 'tok-2');
    assert.equal(stub.tokenRequests(), 2);
  });

  it('waits for a new token once the cached one has expired', async () => {
    const stub = await issuer({ expiresIn: 10 });
    const clock = new ManualClock();
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's', clock, random: () => 0 });
    await tokens.getToken();
    clock.advance(10_000);
    assert.equal((await tokens.getToken()).value, 'tok-2');
  });

  it('keeps the still-valid token when an early refresh fails', async () => {
    const stub = await issuer({
      answerToken: (count, response) =>
        count === 1 ? sendJson(response, 200, { access_token: 'tok-1', token_type: 'bearer', expires_in: 100 }) : sendJson(response, 503, { error: 'temporarily_unavailable' }),
    });
    const clock = new ManualClock();
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's', clock, random: () => 0 });
    await tokens.getToken();
    clock.advance(80_000);
    assert.equal((await tokens.getToken()).value, 'tok-1');
    await eventually(() => stub.tokenRequests() >= 2);
    assert.equal((await tokens.getToken()).value, 'tok-1');
  });

  it('surfaces invalid_client at once, as a non-retryable error carrying the OAuth code', async () => {
    const stub = await issuer({ answerToken: (_count, response) => sendJson(response, 401, { error: 'invalid_client', error_description: 'client authentication failed' }) });
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 'super-secret-value', authMethod: 'client_secret_post' });
    await assert.rejects(tokens.getToken(), (error: unknown) => {
      assert.ok(error instanceof TokenRequestError);
      assert.equal(error.code, 'invalid_client');
      assert.equal(error.retryable, false);
      assert.doesNotMatch(error.message, /super-secret-value/);
      return true;
    });
  });

  it('reads the secret for every token request, so a rotated secret is used without a restart', async () => {
    const stub = await issuer({ expiresIn: 1 });
    const clock = new ManualClock();
    let secret = 'first';
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => secret, clock });
    await tokens.getToken();
    secret = 'second';
    clock.advance(1_000);
    await tokens.getToken();
    const secrets = stub.requests.filter((request) => request.path === '/token').map((request) => Buffer.from((request.headers.authorization ?? '').slice(6), 'base64').toString());
    assert.deepEqual(secrets, ['c:first', 'c:second']);
  });

  it('refuses plain http to a host that is not loopback', () => {
    assert.throws(() => new TokenSource({ issuer: 'http://auth.example.com', clientId: 'c', clientSecret: () => 's' }), /refusing plain http/);
    assert.ok(new TokenSource({ issuer: 'http://auth.internal', clientId: 'c', clientSecret: () => 's', allowInsecureHttp: true }));
  });

  it('retries network failures, 429 and 5xx with backoff, honouring Retry-After', async () => {
    const stub = await issuer({
      answerToken: (count, response) => {
        if (count === 1) return sendJson(response, 503, { error: 'temporarily_unavailable' });
        if (count === 2) return sendJson(response, 429, { error: 'slow_down' }, { 'retry-after': '3' });
        sendJson(response, 200, { access_token: 'tok', token_type: 'bearer', expires_in: 60 });
      },
    });
    const clock = new ManualClock();
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's', clock, random: () => 0.5 });
    assert.equal((await tokens.getToken()).value, 'tok');
    assert.equal(stub.tokenRequests(), 3);
    assert.equal(clock.sleeps.length, 2);
    assert.equal(clock.sleeps[1], 3_000, 'Retry-After: 3 is honoured');
  });

  for (const code of ['invalid_scope', 'unauthorized_client', 'invalid_request']) {
    it(`surfaces ${code} at once without retrying`, async () => {
      const stub = await issuer({ answerToken: (_count, response) => sendJson(response, 400, { error: code }) });
      const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's', clock: new ManualClock() });
      await assert.rejects(tokens.getToken(), (error: unknown) => error instanceof TokenRequestError && error.code === code && !error.retryable);
      assert.equal(stub.tokenRequests(), 1);
    });
  }

  it('caches per scope and resource: another scope is another token, each shared by its callers', async () => {
    const stub = await issuer();
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's', scope: 'predict' });
    const [a, b, c] = await Promise.all([tokens.getToken(), tokens.getToken({ scope: 'models:read' }), tokens.getToken({ scope: 'models:read' })]);
    assert.equal(stub.tokenRequests(), 2);
    assert.notEqual(a.cacheKey, b.cacheKey);
    assert.equal(b, c);
    tokens.invalidate(a);
    assert.equal(await tokens.getToken({ scope: 'models:read' }), b, 'invalidating one key leaves the others');
    const scopes = stub.requests.filter((request) => request.path === '/token').map((request) => new URLSearchParams(request.body).get('scope'));
    assert.deepEqual(scopes.sort(), ['models:read', 'predict']);
  });
});

describe('TokenSource discovery', () => {
  /** A plain OAuth 2 server: only the metadata documents named in `serve`, and a token endpoint. */
  async function server(serve: string[]) {
    const stub = await startStubServer((request, _body, response) => {
      if (serve.includes(request.url ?? '')) return sendJson(response, 200, { issuer: stub.url, token_endpoint: `${stub.url}/oauth/token` });
      if (request.url === '/oauth/token') return sendJson(response, 200, { access_token: 'tok', token_type: 'bearer', expires_in: 60 });
      sendJson(response, 404, { error: 'not_found' });
    });
    stubs.push(stub);
    return stub;
  }

  it('uses RFC 8414 metadata (/.well-known/oauth-authorization-server) from a server without OpenID metadata', async () => {
    const stub = await server(['/.well-known/oauth-authorization-server']);
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's' });
    assert.equal((await tokens.getToken()).value, 'tok');
    assert.deepEqual(stub.requests.map((request) => request.path), ['/.well-known/oauth-authorization-server', '/oauth/token']);
  });

  it('falls back to OpenID metadata (/.well-known/openid-configuration) when RFC 8414 metadata answers 404', async () => {
    const stub = await server(['/.well-known/openid-configuration']);
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's' });
    assert.equal((await tokens.getToken()).value, 'tok');
    assert.deepEqual(stub.requests.map((request) => request.path), ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration', '/oauth/token']);
  });

  it('reports no metadata at either URL as a configuration error naming both, not a failed authentication, and sends no token request', async () => {
    const stub = await server([]);
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's', clock: new ManualClock() });
    await assert.rejects(tokens.getToken(), (error: unknown) => {
      assert.ok(error instanceof TokenRequestError);
      assert.equal(error.code, 'metadata_not_found');
      assert.equal(error.retryable, false);
      assert.ok(error.message.includes(`${stub.url}/.well-known/oauth-authorization-server or ${stub.url}/.well-known/openid-configuration`), error.message);
      return true;
    });
    assert.equal(stub.requests.length, 2);
  });

  it('names the metadata document that names another issuer', async () => {
    const stub = await startStubServer((_request, _body, response) => sendJson(response, 200, { issuer: 'http://elsewhere.example', token_endpoint: 'http://elsewhere.example/token' }));
    stubs.push(stub);
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's', clock: new ManualClock() });
    await assert.rejects(tokens.getToken(), (error: unknown) => error instanceof TokenRequestError && error.code === 'issuer_mismatch' && error.message.includes('http://elsewhere.example'));
  });

  /** A loopback port nothing listens on (it was free a moment ago). */
  async function closedPort(): Promise<number> {
    const probe = await startStubServer(() => {});
    await probe.close();
    return Number(new URL(probe.url).port);
  }

  it('names the URL and the cause when the token endpoint cannot be reached', async () => {
    const port = await closedPort();
    const stub = await startStubServer((_request, _body, response) => sendJson(response, 200, { issuer: stub.url, token_endpoint: `http://127.0.0.1:${port}/token` }));
    stubs.push(stub);
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's', clock: new ManualClock(), maxAttempts: 1 });
    await assert.rejects(tokens.getToken(), (error: unknown) => {
      assert.ok(error instanceof TokenRequestError);
      assert.equal(error.code, 'network_error');
      assert.equal(error.message, `token endpoint unreachable at http://127.0.0.1:${port}/token: connect ECONNREFUSED 127.0.0.1:${port}`);
      return true;
    });
  });

  it('names the metadata URL and the cause when the issuer cannot be reached', async () => {
    const port = await closedPort();
    const tokens = new TokenSource({ issuer: `http://127.0.0.1:${port}`, clientId: 'c', clientSecret: () => 's', clock: new ManualClock(), maxAttempts: 1 });
    await assert.rejects(tokens.getToken(), { message: `authorization server metadata unreachable at http://127.0.0.1:${port}/.well-known/oauth-authorization-server: connect ECONNREFUSED 127.0.0.1:${port}` });
  });
});
