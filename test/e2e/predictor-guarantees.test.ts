import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { rememberSecret, startTypeScript, stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { metric, tokenSignedByUnpublishedKey } from '../src/harness/probes.js';
import { DEV_ENV, requestToken, startAuthServer, startPredictor, type RunningAuthServer, type RunningPredictor } from '../src/harness/system.js';

const ROW = [6.1, 2.8, 4.7, 1.2];


function post(predictorUrl: string, headers: Record<string, string>, inputs: number[][] = [ROW]) {
  return fetch(`${predictorUrl}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ inputs }) });
}

describe('predictor guarantees, across real processes', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let predictor: RunningPredictor;
  let callerToken: string;
  let freeToken: string;

  before(async () => {
    dataDir = await temporaryDirectory('guarantees');
    auth = await startAuthServer({ dataDir: `${dataDir.path}/auth` });
    predictor = await startPredictor({ issuer: auth.issuer, dataDir: `${dataDir.path}/predictor` });
    callerToken = (await requestToken(auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!, { scope: 'predict' })).body['access_token'] as string;
    freeToken = (await requestToken(auth.issuer, 'demo-free', DEV_ENV['DEMO_FREE_SECRET']!, { scope: 'predict' })).body['access_token'] as string;
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  it('runs the model once for 200 concurrent requests with one key; every answer is the stored one or a 409', async () => {
    const before = await metric(predictor, /^predictor_model_executions_total (\d+)/m);
    const responses = await Promise.all(Array.from({ length: 200 }, () => post(predictor.url, { authorization: `Bearer ${callerToken}`, 'idempotency-key': 'concurrent-1' })));
    const bodies = new Set<string>();
    for (const response of responses) {
      assert.ok([200, 409].includes(response.status), `status ${response.status}`);
      const text = await response.text();
      if (response.status === 200) bodies.add(text);
    }
    assert.equal(bodies.size, 1);
    assert.equal((await metric(predictor, /^predictor_model_executions_total (\d+)/m)) - before, 1);
  });

  it('replays a completed key after the predictor is killed (SIGKILL) and restarted on the same data directory', async () => {
    const first = await post(predictor.url, { authorization: `Bearer ${callerToken}`, 'idempotency-key': 'survives-crash' });
    const firstBody = await first.text();
    assert.equal(first.status, 200);
    await predictor.process.kill();
    predictor = await startPredictor({ issuer: auth.issuer, dataDir: `${dataDir.path}/predictor` });
    const retried = await post(predictor.url, { authorization: `Bearer ${callerToken}`, 'idempotency-key': 'survives-crash' });
    assert.equal(retried.headers.get('idempotent-replayed'), 'true');
    assert.equal(await retried.text(), firstBody);
    assert.equal(await metric(predictor, /^predictor_model_executions_total (\d+)/m), 0, 'the restarted predictor executed nothing');
  });

  it('holds demo-free to its bucket during a burst of 100, with consistent headers, and lets it in after Retry-After', async () => {
    const started = performance.now();
    const responses = await Promise.all(Array.from({ length: 100 }, () => post(predictor.url, { authorization: `Bearer ${freeToken}` })));
    const elapsedSeconds = (performance.now() - started) / 1000;
    const ok = responses.filter((response) => response.status === 200).length;
    assert.ok(ok >= 6 && ok <= 6 + Math.ceil(2 * elapsedSeconds), `${ok} succeeded in ${elapsedSeconds.toFixed(2)} s`);
    const limited = responses.filter((response) => response.status === 429);
    assert.equal(limited.length, 100 - ok);
    for (const response of limited) {
      assert.equal(response.headers.get('x-ratelimit-remaining'), '0');
      assert.equal(response.headers.get('x-ratelimit-limit'), '6');
      assert.ok(Number(response.headers.get('retry-after')) >= 1);
      assert.match(response.headers.get('ratelimit-policy') ?? '', /"burst";q=6;w=3, "daily";q=1000;w=86400/);
    }
    const wait = Math.max(...limited.map((response) => Number(response.headers.get('retry-after'))));
    // Waiting out Retry-After is the behaviour under test; it is one second on the free plan.
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    assert.equal((await post(predictor.url, { authorization: `Bearer ${freeToken}` })).status, 200);
  });

  it('issues, accepts and revokes API keys through npm run apikey, without a predictor restart', async () => {
    const env = { PREDICTOR_DATA_DIR: `${dataDir.path}/predictor` };
    const create = startTypeScript('apikey', 'predictor/src/apikey-cli.ts', env, ['create', '--client', 'batch-job', '--scopes', 'predict', '--plan', 'standard']);
    assert.equal((await create.exited).code, 0, create.output());
    const apiKey = create.stdoutLines[0]!;
    rememberSecret(apiKey);
    assert.match(apiKey, /^m2mk_/);
    assert.equal((await post(predictor.url, { 'x-api-key': apiKey })).status, 200);
    const id = apiKey.split('_')[1]!;
    const revoke = startTypeScript('apikey', 'predictor/src/apikey-cli.ts', env, ['revoke', id]);
    assert.equal((await revoke.exited).code, 0, revoke.output());
    assert.equal((await post(predictor.url, { 'x-api-key': apiKey })).status, 401);
  });

  it('keeps verifying known tokens when the key server goes down, and refuses an unknown kid with 401 without a fetch storm', async () => {
    const fetchesBefore = await metric(predictor, /^predictor_jwks_fetches_total\{outcome="success"\} (\d+)/m);
    await auth.process.stop();
    assert.equal((await post(predictor.url, { authorization: `Bearer ${callerToken}` })).status, 200);
    const unknownKid = await tokenSignedByUnpublishedKey(auth.issuer, 'rotated-in-secret');
    const statuses = await Promise.all(Array.from({ length: 50 }, () => post(predictor.url, { authorization: `Bearer ${unknownKid}` }).then((response) => response.status)));
    assert.deepEqual(new Set(statuses), new Set([401]));
    const failures = await metric(predictor, /^predictor_jwks_fetches_total\{outcome="failure"\} (\d+)/m);
    const successes = await metric(predictor, /^predictor_jwks_fetches_total\{outcome="success"\} (\d+)/m);
    assert.ok(failures <= 1, `${failures} failed JWKS fetches for 50 unknown-kid requests`);
    assert.equal(successes, fetchesBefore);
    assert.equal((await post(predictor.url, { authorization: `Bearer ${callerToken}` })).status, 200, 'known keys still verify');
  });
});
