import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { buildApp } from './app.js';
import { createTokenVerifier } from './auth/token-verifier.js';
import { KeysUnavailable } from './http/problems.js';
import { createIrisModel } from './model/index.js';
import committedWeights from './model/iris-softmax.weights.json' with { type: 'json' };
import { testDeps } from './testing/test-app.js';
import { createTestIssuer, TEST_AUDIENCE, TEST_ISSUER, unsignedToken } from './testing/test-issuer.js';

const SETOSA = [5.1, 3.5, 1.4, 0.2];

describe('predictor HTTP API', () => {
  let issuer: Awaited<ReturnType<typeof createTestIssuer>>;
  let app: ReturnType<typeof buildApp>;

  before(async () => {
    issuer = await createTestIssuer();
    app = buildApp(
      testDeps({
        verifyToken: createTokenVerifier({ issuer: TEST_ISSUER, audience: TEST_AUDIENCE, algorithms: ['ES256', 'EdDSA'], clockToleranceSeconds: 5, getKey: issuer.getKey }),
      }),
    );
  });

  const predict = (token: string | undefined, body: unknown = { inputs: [SETOSA] }, headers: Record<string, string> = {}) =>
    app.request('/v1/predict', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }), ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });

  async function assertProblem(response: Response, status: number) {
    assert.equal(response.status, status);
    assert.equal(response.headers.get('content-type'), 'application/problem+json');
    const problem = (await response.json()) as Record<string, unknown>;
    for (const member of ['type', 'title', 'status', 'detail']) assert.ok(member in problem, `problem has ${member}`);
    assert.equal(problem['status'], status);
    return problem;
  }

  it('answers 200 with a prediction per row for a valid token', async () => {
    const response = await predict(await issuer.token(), { inputs: [SETOSA, [6.7, 3.0, 5.2, 2.3]] });
    assert.equal(response.status, 200);
    const body = (await response.json()) as { id: string; model: string; created: number; predictions: { label: string; probabilities: Record<string, number> }[] };
    assert.match(body.id, /^pred_/);
    assert.equal(body.model, 'iris-softmax-v1');
    assert.equal(typeof body.created, 'number');
    assert.deepEqual(body.predictions.map((prediction) => prediction.label), ['setosa', 'virginica']);
  });

  it('gives every executed prediction its own id', async () => {
    const token = await issuer.token();
    const ids = new Set<string>();
    for (let i = 0; i < 3; i += 1) ids.add(((await (await predict(token)).json()) as { id: string }).id);
    assert.equal(ids.size, 3);
  });

  it('answers 401 with a bare Bearer challenge when no credentials are sent', async () => {
    const response = await predict(undefined);
    await assertProblem(response, 401);
    assert.equal(response.headers.get('www-authenticate'), 'Bearer realm="predictor"');
  });

  it('answers 401 with a bare Bearer challenge (no error code) for credentials of another scheme', async () => {
    const response = await app.request('/v1/predict', { method: 'POST', headers: { authorization: 'Basic ZGVtbzpzZWNyZXQ=' } });
    const problem = await assertProblem(response, 401);
    assert.equal(response.headers.get('www-authenticate'), 'Bearer realm="predictor"');
    assert.match(String(problem['detail']), /"Basic" is not supported/);
  });

  for (const [name, header] of [
    ['a scheme without token', 'Bearer'],
    ['extra parts', 'Bearer a b'],
    ['a token sent twice', 'Bearer abc, Bearer abc'],
  ] as const) {
    it(`answers 400 invalid_request for a malformed Authorization header: ${name}`, async () => {
      const response = await app.request('/v1/predict', { method: 'POST', headers: { authorization: header } });
      await assertProblem(response, 400);
      assert.match(response.headers.get('www-authenticate') ?? '', /^Bearer realm="predictor", error="invalid_request"/);
    });
  }

  const invalidTokens: [string, () => Promise<string>][] = [
    ['a garbage token', async () => 'not-a-jwt'],
    ['an expired token', () => issuer.token({ claims: { iat: Math.floor(Date.now() / 1000) - 3600, exp: Math.floor(Date.now() / 1000) - 600 } })],
    ['a token not yet valid', () => issuer.token({ claims: { nbf: Math.floor(Date.now() / 1000) + 600 } })],
    ['a token for another audience', () => issuer.token({ claims: { aud: 'https://other.test' } })],
    ['a token from another issuer', () => issuer.token({ claims: { iss: 'https://evil.test' } })],
    ['a token signed by a key not in the JWKS', () => issuer.token({ signWith: 'unpublished' })],
    ['a token with a forged signature', async () => `${(await issuer.token()).split('.').slice(0, 2).join('.')}.${Buffer.alloc(64).toString('base64url')}`],
    ['an alg none token', async () => unsignedToken({ iss: TEST_ISSUER, aud: TEST_AUDIENCE, client_id: 'demo-caller', scope: 'predict' })],
    ['a symmetric (HS256) token', () => new SignJWT({ iss: TEST_ISSUER, aud: TEST_AUDIENCE, client_id: 'x' }).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(new Uint8Array(32))],
    ['a token with typ JWT instead of at+jwt', () => issuer.token({ header: { typ: 'JWT' } })],
    ['a token without client_id', () => issuer.token({ claims: { client_id: undefined } })],
  ];
  for (const [name, mint] of invalidTokens) {
    it(`answers 401 invalid_token for ${name}`, async () => {
      const response = await predict(await mint());
      await assertProblem(response, 401);
      assert.match(response.headers.get('www-authenticate') ?? '', /^Bearer realm="predictor", error="invalid_token", error_description="[^"]+"$/);
    });
  }

  it('answers 403 insufficient_scope with scope="predict" for a token without predict', async () => {
    const response = await predict(await issuer.token({ claims: { scope: 'models:read', client_id: 'demo-readonly', sub: 'demo-readonly' } }));
    await assertProblem(response, 403);
    assert.match(response.headers.get('www-authenticate') ?? '', /error="insufficient_scope", scope="predict"/);
  });

  it('serves GET /v1/models to models:read and refuses it without that scope', async () => {
    const allowed = await app.request('/v1/models', { headers: { authorization: `Bearer ${await issuer.token({ claims: { scope: 'models:read' } })}` } });
    assert.equal(allowed.status, 200);
    const { data } = (await allowed.json()) as { data: { id: string; labels: string[] }[] };
    assert.deepEqual(data[0]?.labels, ['setosa', 'versicolor', 'virginica']);
    const refused = await app.request('/v1/models', { headers: { authorization: `Bearer ${await issuer.token({ claims: { scope: 'predict' } })}` } });
    assert.match(refused.headers.get('www-authenticate') ?? '', /scope="models:read"/);
    await assertProblem(refused, 403);
  });

  it('answers 413 for a declared Content-Length over the limit, before reading the body', async () => {
    const response = await predict(await issuer.token(), 'x'.repeat(2048));
    await assertProblem(response, 413);
  });

  it('answers 413 for a chunked body over the limit', async () => {
    const token = await issuer.token();
    const chunks = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 8; i += 1) controller.enqueue(new TextEncoder().encode(' '.repeat(256)));
        controller.close();
      },
    });
    const response = await app.request('/v1/predict', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: chunks,
      duplex: 'half',
    } as RequestInit);
    await assertProblem(response, 413);
  });

  it('answers 415 for a body that is not declared as JSON', async () => {
    await assertProblem(await predict(await issuer.token(), JSON.stringify({ inputs: [SETOSA] }), { 'content-type': 'text/plain' }), 415);
  });

  it('answers 400 for malformed JSON', async () => {
    await assertProblem(await predict(await issuer.token(), '{"inputs": [[1,2,'), 400);
  });

  it('answers 422 listing the failing paths of a wrong shape', async () => {
    const problem = await assertProblem(await predict(await issuer.token(), { inputs: [SETOSA, [1, 2, 3], [1, 2, 3, 'x']], extra: true }), 422);
    const pointers = (problem['errors'] as { pointer: string }[]).map((error) => error.pointer).sort();
    assert.deepEqual(pointers, ['', '/inputs/1', '/inputs/2/3']);
  });

  it('answers 422 naming each feature past ±1e6 cm, never 200 with null probabilities ({"inputs":[[1e308,1e308,-1e308,1e308]]})', async () => {
    const response = await predict(await issuer.token(), '{"inputs":[[1e308,1e308,-1e308,1e308]]}');
    const problem = await assertProblem(response, 422);
    const errors = problem['errors'] as { pointer: string; detail: string }[];
    assert.deepEqual(errors.map((error) => error.pointer), ['/inputs/0/0', '/inputs/0/1', '/inputs/0/2', '/inputs/0/3']);
    assert.match(errors[0]!.detail, /between -1000000 and 1000000/);
    const atBound = await predict(await issuer.token(), { inputs: [[1e6, -1e6, 1e6, -1e6]] });
    assert.equal(atBound.status, 200);
    const { predictions } = (await atBound.json()) as { predictions: { probabilities: Record<string, number> }[] };
    assert.ok(Object.values(predictions[0]!.probabilities).every(Number.isFinite));
  });

  it('answers 422 naming the row when a logit still overflows (a model with huge weights), and does not store the key', async () => {
    const weights = { ...committedWeights, weights: committedWeights.weights.map((row) => row.map((weight) => weight * 1e303)) };
    const huge = buildApp(testDeps({ verifyToken: async () => ({ clientId: 'c', scopes: new Set(['predict']), plan: 'standard', authMethod: 'bearer-jwt', tokenId: undefined, expiresAt: 0 }), model: createIrisModel(weights) }));
    const send = () =>
      huge.request('/v1/predict', { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer any', 'idempotency-key': 'huge' }, body: JSON.stringify({ inputs: [SETOSA, [1e6, 1e6, 1e6, 1e6]] }) });
    const problem = await assertProblem(await send(), 422);
    assert.deepEqual((problem['errors'] as { pointer: string }[]).map((error) => error.pointer), ['/inputs/1']);
    await assertProblem(await send(), 422); // the same key again: executed again, not a stored answer
  });

  it('answers 422 for no rows and for more than 1000 rows', async () => {
    const token = await issuer.token();
    await assertProblem(await predict(token, { inputs: [] }), 422);
    const big = buildApp(
      testDeps({
        verifyToken: async () => ({ clientId: 'c', scopes: new Set(['predict']), plan: 'standard', authMethod: 'bearer-jwt', tokenId: undefined, expiresAt: 0 }),
        bodyLimitBytes: 65_536,
      }),
    );
    const response = await big.request('/v1/predict', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer any' },
      body: JSON.stringify({ inputs: Array.from({ length: 1001 }, () => [1, 1, 1, 1]) }),
    });
    await assertProblem(response, 422);
  });

  it('echoes a well-formed X-Request-Id and replaces a malformed one', async () => {
    const mine = randomUUID();
    assert.equal((await app.request('/healthz', { headers: { 'x-request-id': mine } })).headers.get('x-request-id'), mine);
    const replaced = (await app.request('/healthz', { headers: { 'x-request-id': 'bad id\twith spaces' } })).headers.get('x-request-id');
    assert.match(replaced ?? '', /^[0-9a-f-]{36}$/);
    assert.ok((await predict(undefined)).headers.get('x-request-id'), 'errors carry it too');
  });

  it('answers 404 as a problem', async () => {
    await assertProblem(await app.request('/v2/nothing'), 404);
  });

  it('answers GET /v1/predict with 405 and Allow: POST, as a problem (RFC 9110 section 15.5.6)', async () => {
    const response = await app.request('/v1/predict', { headers: { authorization: `Bearer ${await issuer.token()}` } });
    const problem = await assertProblem(response, 405);
    assert.equal(response.headers.get('allow'), 'POST');
    assert.match(String(problem['detail']), /\/v1\/predict answers POST only/);
  });

  it('answers every route of the app with 405 and its Allow for another method, from the route table', async () => {
    const routes = app.routes.filter((route) => route.method !== 'ALL');
    assert.ok(new Set(routes.map((route) => route.path)).size >= 4, 'the route table lists the routes');
    for (const { path, method } of routes) {
      const other = method === 'POST' ? 'PUT' : 'POST';
      const response = await app.request(path, { method: other });
      await assertProblem(response, 405);
      const allowed = [...new Set(routes.filter((route) => route.path === path).map((route) => route.method))];
      assert.deepEqual(response.headers.get('allow')?.split(', ').sort(), [...allowed, ...(allowed.includes('GET') ? ['HEAD'] : [])].sort(), `${other} ${path}`);
    }
    assert.equal((await app.request('/v1/models', { method: 'DELETE' })).headers.get('allow'), 'GET, HEAD');
  });

  it('keeps HEAD working on GET routes; HEAD on a POST-only route is 405', async () => {
    const head = await app.request('/healthz', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    assert.equal((await app.request('/v1/predict', { method: 'HEAD' })).status, 405);
  });
});

describe('predictor readiness and key outages', () => {
  it('reports not ready (503) until the keys are loaded, while /healthz stays 200', async () => {
    let reason: string | undefined = 'signing keys not loaded yet';
    const app = buildApp(
      testDeps({
        verifyToken: async () => {
          throw new KeysUnavailable(1);
        },
        readiness: async () => ({ notReadyReason: reason }),
      }),
    );
    assert.equal((await app.request('/healthz')).status, 200);
    const notReady = await app.request('/readyz');
    assert.equal(notReady.status, 503);
    assert.equal(notReady.headers.get('retry-after'), '1');
    reason = undefined;
    assert.equal((await app.request('/readyz')).status, 200);
  });

  it('answers 503 with Retry-After, not 401, when no signing keys can be obtained', async () => {
    const app = buildApp(
      testDeps({
        verifyToken: createTokenVerifier({
          issuer: TEST_ISSUER,
          audience: TEST_AUDIENCE,
          algorithms: ['ES256'],
          clockToleranceSeconds: 5,
          getKey: async () => {
            throw new TypeError('fetch failed');
          },
        }),
      }),
    );
    const issuer = await createTestIssuer();
    const response = await app.request('/v1/predict', { method: 'POST', headers: { authorization: `Bearer ${await issuer.token()}` } });
    assert.equal(response.status, 503);
    assert.ok(Number(response.headers.get('retry-after')) > 0);
  });
});
