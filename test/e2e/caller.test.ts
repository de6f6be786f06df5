import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { PredictorClient, TokenSource, type AttemptEvent } from 'caller';
import { startTypeScript, stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { metric } from '../src/harness/probes.js';
import { DEV_ENV, startAuthServer, startPredictor, TEST_AUDIENCE, type RunningAuthServer, type RunningPredictor } from '../src/harness/system.js';


describe('caller against the real servers', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let predictor: RunningPredictor;

  before(async () => {
    dataDir = await temporaryDirectory('caller');
    // A 3 s token lifetime and a tight plan of the real plans' shape (burst = 3 s of the rate): burst 120, 40 requests per second.
    await writeFile(`${dataDir.path}/plans.json`, JSON.stringify({ plans: { standard: { burst: 120, refillPerSecond: 40, dailyQuota: 100_000 }, free: { burst: 2, refillPerSecond: 1, dailyQuota: 100 } }, defaultPlan: 'free' }));
    auth = await startAuthServer({ dataDir: `${dataDir.path}/auth`, env: { ACCESS_TOKEN_TTL: '3' } });
    predictor = await startPredictor({ issuer: auth.issuer, dataDir: `${dataDir.path}/predictor`, env: { PLANS_FILE: `${dataDir.path}/plans.json` } });
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  it('renews a 3 s token ahead of expiry during 10 s of steady calls: no call sees a 401', async () => {
    const events: AttemptEvent[] = [];
    const tokens = new TokenSource({ issuer: auth.issuer, clientId: 'demo-caller', clientSecret: () => DEV_ENV['DEMO_CALLER_SECRET']!, scope: 'predict' });
    const client = new PredictorClient({ baseUrl: predictor.url, tokens, onAttempt: (event) => events.push(event) });
    const unauthorizedBefore = await metric(predictor, /^predictor_http_requests_total\{route="\/v1\/predict",method="POST",status="401"\} (\d+)/m);
    const started = performance.now();
    let calls = 0;
    while (performance.now() - started < 10_000) {
      await client.predict([[5.1, 3.5, 1.4, 0.2]]);
      calls += 1;
      await new Promise((resolve) => setTimeout(resolve, 50)); // steady pacing, well inside the plan
    }
    assert.ok(calls > 50);
    assert.equal(events.filter((event) => event.status === 401).length, 0);
    assert.ok(tokens.tokenRequests >= 4, `${tokens.tokenRequests} token requests in 10 s with a 3 s lifetime`);
    const unauthorizedAfter = await metric(predictor, /^predictor_http_requests_total\{route="\/v1\/predict",method="POST",status="401"\} (\d+)/m);
    assert.equal(unauthorizedAfter, unauthorizedBefore, 'the predictor served no 401');
  });

  it('caller batch: 300 lines at concurrency 20 under a tight plan all succeed, the summary matches the server, each line executed once', async () => {
    const file = `${dataDir.path}/batch.jsonl`;
    const lines = Array.from({ length: 300 }, (_, index) => JSON.stringify({ inputs: [[4 + (index % 40) / 10, 3, 1 + (index % 50) / 10, 0.2 + (index % 20) / 10]] }));
    await writeFile(file, `${lines.join('\n')}\n`);
    const statusCount = (status: number) => metric(predictor, new RegExp(`^predictor_http_requests_total\\{route="/v1/predict",method="POST",status="${status}"\\} (\\d+)`, 'm'));
    const [ok0, limited0, executions0] = [await statusCount(200), await statusCount(429), await metric(predictor, /^predictor_model_executions_total (\d+)/m)];
    const batch = startTypeScript('caller', 'caller/bin/caller.js', {
      ISSUER: auth.issuer,
      PREDICTOR_URL: predictor.url,
      PREDICTOR_AUDIENCE: TEST_AUDIENCE,
      CLIENT_ID: 'demo-caller',
      CLIENT_SECRET: DEV_ENV['DEMO_CALLER_SECRET']!,
      SCOPE: 'predict',
    }, ['batch', file, '--concurrency', '20', '--max-attempts', '10']);
    const { code } = await batch.exited;
    assert.equal(code, 0, batch.stderrLines.join('\n'));
    const results = batch.stdoutLines.map((line) => JSON.parse(line) as { ok: boolean; response: { id: string } });
    assert.equal(results.length, 300);
    assert.ok(results.every((result) => result.ok));
    assert.equal(new Set(results.map((result) => result.response.id)).size, 300);
    const summary = batch.stderrLines.join('\n');
    const number = (pattern: RegExp) => Number(pattern.exec(summary)?.[1]);
    assert.equal(number(/ok (\d+), failed 0/), 300);
    const reported429s = number(/429s (\d+),/);
    // The caller paces itself from the rate-limit fields (caller/src/limits/): 429s are the rare backstop.
    assert.ok(reported429s <= 0.02 * 300, `${reported429s} answers 429 for 300 lines`);
    assert.equal((await statusCount(200)) - ok0, 300);
    assert.equal((await statusCount(429)) - limited0, reported429s, 'the caller counted the 429s the server sent');
    assert.equal(number(/attempts (\d+),/), 300 + reported429s);
    assert.equal((await metric(predictor, /^predictor_model_executions_total (\d+)/m)) - executions0, 300, 'each line executed exactly once');
    assert.match(summary, /latency p50 \d+ ms, p95 \d+ ms, p99 \d+ ms/);
    assert.match(summary, /progress 300\/300/);
  });

  it('caller predict --verbose prints every attempt on stderr, and a 403 stops after one attempt with the reason and exit code 4', async () => {
    const readonly = startTypeScript('caller', 'caller/bin/caller.js', {
      ISSUER: auth.issuer,
      PREDICTOR_URL: predictor.url,
      CLIENT_ID: 'demo-readonly',
      CLIENT_SECRET: DEV_ENV['DEMO_READONLY_SECRET']!,
      SCOPE: 'models:read',
    }, ['predict', '[[1,1,1,1]]', '--verbose']);
    assert.equal((await readonly.exited).code, 4);
    const stderr = readonly.stderrLines.join('\n');
    assert.match(stderr, /^attempt 1 \[key [0-9a-f-]{36}\]: 403 → stop \(not-retryable\)$/m);
    assert.doesNotMatch(stderr, /attempt 2/);
    assert.match(stderr, /insufficient_scope/);
    assert.doesNotMatch(stderr, new RegExp(DEV_ENV['DEMO_READONLY_SECRET']!));
  });
});
