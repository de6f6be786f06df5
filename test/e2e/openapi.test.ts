import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import { OpenApiConformance } from '../src/harness/openapi-conformance.js';
import { freePort, stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { DEV_ENV, requestToken, startAuthServer, startPredictor, type RunningAuthServer, type RunningPredictor } from '../src/harness/system.js';

const SETOSA = [5.1, 3.5, 1.4, 0.2];

/**
 * /openapi.json of a real predictor: valid OpenAPI 3.1 by an independent validator, and true
 * to the predictor's real answers, one of each status it gives (the document's 500 aside).
 */
describe('the OpenAPI document of a running predictor', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let predictor: RunningPredictor;
  let document: Record<string, any>;
  let conformance: OpenApiConformance;
  let callerToken: string;

  before(async () => {
    dataDir = await temporaryDirectory('openapi');
    auth = await startAuthServer({ dataDir: dataDir.path });
    // A slow model keeps a request in flight long enough for its twin to get 409.
    predictor = await startPredictor({ issuer: auth.issuer, dataDir: dataDir.path, env: { SIMULATED_INFERENCE_MS: '1000' } });
    callerToken = await token('demo-caller', 'DEMO_CALLER_SECRET', 'predict models:read');
    const response = await fetch(`${predictor.url}/openapi.json`);
    assert.equal(response.status, 200);
    document = (await response.json()) as Record<string, any>;
    conformance = new OpenApiConformance(document);
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  async function token(clientId: string, secretVariable: string, scope: string): Promise<string> {
    const { body } = await requestToken(auth.issuer, clientId, DEV_ENV[secretVariable]!, { scope });
    return body['access_token'] as string;
  }
  const predict = (headers: Record<string, string>, body: string = JSON.stringify({ inputs: [SETOSA] })) =>
    fetch(`${predictor.url}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${callerToken}`, ...headers }, body });
  const PREDICT = { method: 'post', path: '/v1/predict' };
  const MODELS = { method: 'get', path: '/v1/models' };

  it('is a valid OpenAPI 3.1 document (@seriousme/openapi-schema-validator)', async () => {
    const result = await new Validator().validate(document);
    assert.deepEqual(result.errors, undefined);
    assert.equal(result.valid, true);
    assert.equal(document['openapi'], '3.1.0');
    assert.equal(document['components']['securitySchemes']['oauth2'].flows.clientCredentials.tokenUrl, `${auth.issuer}/token`);
  });

  it('describes the 200 of every route: health, readiness, metadata, the document, the page, models and predictions', async () => {
    for (const path of ['/healthz', '/readyz', '/.well-known/oauth-protected-resource', '/openapi.json', '/docs']) {
      await conformance.check(await fetch(`${predictor.url}${path}`), { method: 'get', path });
    }
    await conformance.check(await fetch(`${predictor.url}/v1/models`, { headers: { authorization: `Bearer ${callerToken}` } }), MODELS);
    const body = (await conformance.check(await predict({}), PREDICT)) as { predictions: { label: string }[] };
    assert.equal(body.predictions[0]?.label, 'setosa');
  });

  it('describes a replay (Idempotent-Replayed) and the 409 of a key still executing', async () => {
    const headers = { 'idempotency-key': `openapi-${Date.now()}` };
    // Both claim the same key at once: one executes (a second, SIMULATED_INFERENCE_MS), the other is told it is in flight.
    const [first, second] = await Promise.all([predict(headers), predict(headers)]);
    assert.deepEqual([first.status, second.status].sort(), [200, 409]);
    for (const response of [first, second]) await conformance.check(response, PREDICT);
    const replay = await predict(headers);
    assert.equal(replay.headers.get('idempotent-replayed'), 'true');
    await conformance.check(replay, PREDICT);
  });

  it('describes the 400s: malformed credentials, a token and an API key together, a bad Idempotency-Key, malformed JSON', async () => {
    const answers = [
      await predict({ authorization: 'Bearer' }),
      await predict({ 'x-api-key': 'm2mk_0123456789abcdef_' + 'a'.repeat(43) }),
      await predict({ 'idempotency-key': 'k'.repeat(256) }),
      await predict({}, '{"inputs": [[5.1, 3.5'),
      await fetch(`${predictor.url}/v1/models`, { headers: { authorization: 'Bearer a b' } }),
    ];
    for (const [index, response] of answers.entries()) {
      assert.equal(response.status, 400, `answer ${index}`);
      await conformance.check(response, index === answers.length - 1 ? MODELS : PREDICT);
    }
  });

  it('describes the 401s and the 403', async () => {
    await conformance.check(await predict({ authorization: '' }), PREDICT);
    await conformance.check(await predict({ authorization: 'Bearer not-a-jwt' }), PREDICT);
    await conformance.check(await fetch(`${predictor.url}/v1/models`), MODELS);
    const readonly = await predict({ authorization: `Bearer ${await token('demo-readonly', 'DEMO_READONLY_SECRET', 'models:read')}` });
    assert.equal(readonly.status, 403);
    await conformance.check(readonly, PREDICT);
  });

  it('describes 413, 415 and both 422s (schema, key reused)', async () => {
    const tooLarge = await new Promise<Response>((resolve, reject) => {
      const body = Buffer.alloc(70 * 1024, ' ');
      const request = httpRequest(`${predictor.url}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${callerToken}`, 'content-length': String(body.length) } }, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk)).on('end', () => resolve(new Response(Buffer.concat(chunks), { status: response.statusCode ?? 0, headers: response.headers as Record<string, string> })));
      });
      request.on('error', reject);
      request.end(body);
    });
    assert.equal(tooLarge.status, 413);
    await conformance.check(tooLarge, PREDICT);

    const notJson = await predict({ 'content-type': 'text/plain' });
    assert.equal(notJson.status, 415);
    await conformance.check(notJson, PREDICT);

    const shape = await predict({}, JSON.stringify({ inputs: [[1, 2, 3]], extra: true }));
    assert.equal(shape.status, 422);
    const problem = (await conformance.check(shape, PREDICT)) as { errors: { pointer: string }[] };
    assert.ok(problem.errors.some((error) => error.pointer === '/inputs/0'), JSON.stringify(problem));

    const key = { 'idempotency-key': `reused-${Date.now()}` };
    assert.equal((await predict(key)).status, 200);
    const reused = await predict(key, JSON.stringify({ inputs: [[6.7, 3.0, 5.2, 2.3]] }));
    assert.equal(reused.status, 422);
    await conformance.check(reused, PREDICT);
  });

  it('describes 404 and 405 (any path, any other method) as its NotFound and MethodNotAllowed responses', async () => {
    const notFound = await fetch(`${predictor.url}/no-such-route`);
    assert.equal(notFound.status, 404);
    await conformance.check(notFound, { component: 'NotFound' });
    for (const [method, path] of [['GET', '/v1/predict'], ['POST', '/healthz'], ['DELETE', '/openapi.json']] as const) {
      const response = await fetch(`${predictor.url}${path}`, { method, headers: { authorization: `Bearer ${callerToken}` } });
      assert.equal(response.status, 405, `${method} ${path}`);
      await conformance.check(response, { component: 'MethodNotAllowed' });
      assert.ok(document['paths'][path], `${path} is a path of the document`);
    }
  });

  it('describes the 429 of an exhausted plan (demo-free: a burst of 6)', async () => {
    const free = await token('demo-free', 'DEMO_FREE_SECRET', 'models:read');
    const answers = await Promise.all(Array.from({ length: 12 }, () => fetch(`${predictor.url}/v1/models`, { headers: { authorization: `Bearer ${free}` } })));
    const refused = answers.filter((response) => response.status === 429);
    assert.ok(refused.length >= 5, `statuses: ${answers.map((response) => response.status).join(' ')}`);
    for (const response of answers) await conformance.check(response, MODELS);
  });

  it('describes the 503s of a predictor whose issuer cannot be reached: not ready, keys unavailable', async () => {
    const unreachable = `http://127.0.0.1:${await freePort()}`;
    const stranded = await startPredictor({ issuer: unreachable, dataDir: `${dataDir.path}/stranded`, waitForKeys: false });
    const ready = await fetch(`${stranded.url}/readyz`);
    assert.equal(ready.status, 503);
    await conformance.check(ready, { method: 'get', path: '/readyz' });
    const models = await fetch(`${stranded.url}/v1/models`, { headers: { authorization: `Bearer ${callerToken}` } });
    assert.equal(models.status, 503);
    await conformance.check(models, MODELS);
    await stranded.process.stop();
  });

  it('refuses answers the document does not describe (the check is not vacuous)', async () => {
    const strict = new OpenApiConformance(document);
    const problem = (status: number, headers: Record<string, string>, extra: Record<string, unknown> = {}) =>
      new Response(JSON.stringify({ type: 'urn:m2m-inference:problem:x', title: 't', status, detail: 'd', ...extra }), { status, headers: { 'x-request-id': 'r', ...headers } });
    const json = { 'content-type': 'application/problem+json' };
    await assert.rejects(strict.check(problem(418, json), PREDICT), /does not list/);
    await assert.rejects(strict.check(problem(422, { 'content-type': 'application/json' }), PREDICT), /content-type application\/json is not one of/);
    await assert.rejects(strict.check(problem(422, json, { errors: [{ pointer: 3 }] }), PREDICT), /does not match its schema/);
    await assert.rejects(strict.check(problem(429, json, { violated_policy: 'burst', limit: 6, window_seconds: 3, retry_after_seconds: 1 }), MODELS), /required header Retry-After/);
    await assert.rejects(strict.check(problem(404, { ...json, 'retry-after': '1' }), { component: 'NotFound' }), /sends retry-after/);
    assert.deepEqual([...strict.checked], []);
  });

  it('covered every status the end-to-end tests provoke', () => {
    assert.deepEqual([...conformance.checked].sort((a, b) => a - b), [200, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 503]);
  });
});
