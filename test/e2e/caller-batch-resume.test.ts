import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { ManagedProcess, REPOSITORY_ROOT, stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { DEV_ENV, startAuthServer, startPredictor, TEST_AUDIENCE, type RunningAuthServer, type RunningPredictor } from '../src/harness/system.js';

/** The installed CLI as a user runs it: caller/bin/caller.js on plain node (the compiled bundle, no TypeScript loader). */
function startCaller(env: Record<string, string>, args: string[]): ManagedProcess {
  const child = spawn(process.execPath, ['caller/bin/caller.js', ...args], { cwd: REPOSITORY_ROOT, env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  return new ManagedProcess('caller', child);
}

/** Resolves once `condition` holds; fails after `timeoutMs` with `description`. */
async function waitFor(condition: () => boolean, description: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${description}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('caller batch: a re-run after an interrupted batch executes no line twice', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let predictor: RunningPredictor;

  before(async () => {
    dataDir = await temporaryDirectory('caller-resume');
    auth = await startAuthServer({ dataDir: `${dataDir.path}/auth` });
    // 40 ms per prediction: 40 lines at concurrency 4 take long enough to interrupt half-way.
    predictor = await startPredictor({ issuer: auth.issuer, dataDir: `${dataDir.path}/predictor`, env: { SIMULATED_INFERENCE_MS: '40' } });
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  it('SIGINT half-way stops the batch with exit 130; --resume <batch id> replays the lines done and executes each of the others once', async () => {
    const file = `${dataDir.path}/rows.jsonl`;
    const total = 40;
    // No idempotency_key on any line: the keys come from the batch id and the line numbers.
    await writeFile(file, `${Array.from({ length: total }, (_, index) => JSON.stringify({ inputs: [[4 + (index % 30) / 10, 3, 1.4, 0.2]] })).join('\n')}\n`);
    const env = { ISSUER: auth.issuer, PREDICTOR_URL: predictor.url, PREDICTOR_AUDIENCE: TEST_AUDIENCE, CLIENT_ID: 'demo-caller', CLIENT_SECRET: DEV_ENV['DEMO_CALLER_SECRET']!, SCOPE: 'predict' };

    const first = startCaller(env, ['batch', file, '--concurrency', '4']);
    await waitFor(() => first.stdoutLines.length >= total / 2, 'half of the results', 60_000);
    first.child.kill('SIGINT');
    const { code } = await first.exited;
    assert.equal(code, 130, first.output());
    const batchId = /^caller: batch ([\w.-]+)/m.exec(first.stderrLines.join('\n'))?.[1];
    assert.ok(batchId, `no batch id on stderr:\n${first.output()}`);
    const firstResults = first.stdoutLines.map((line) => JSON.parse(line) as { line: number; ok: boolean; attempted?: boolean });
    assert.equal(firstResults.length, total, 'one result per line, the lines not attempted included');
    const notAttempted = firstResults.filter((result) => result.attempted === false).length;
    const doneBefore = firstResults.filter((result) => result.ok).length;
    assert.ok(notAttempted > 0 && doneBefore > 0, `interrupted half-way: ${doneBefore} done, ${notAttempted} not attempted`);
    const firstSummary = first.stderrLines.join('\n');
    assert.match(firstSummary, new RegExp(`interrupted: ${notAttempted} lines not attempted.*Resume with: caller batch \\S+ --resume ${batchId}`));

    const second = startCaller(env, ['batch', file, '--concurrency', '4', '--resume', batchId]);
    const resumed = await second.exited;
    assert.equal(resumed.code, 0, second.output());
    const secondResults = second.stdoutLines.map((line) => JSON.parse(line) as { line: number; ok: boolean; replayed?: boolean });
    assert.equal(secondResults.length, total);
    assert.ok(secondResults.every((result) => result.ok));
    const replayed = secondResults.filter((result) => result.replayed).length;
    assert.ok(replayed >= doneBefore, `${replayed} replays for ${doneBefore} lines done before`);
    assert.match(second.stderrLines.join('\n'), new RegExp(`ok ${total}, failed 0, not attempted 0, replayed ${replayed}`));

    // The predictor's own record: one execution per key of the batch, every line executed.
    const executions = new Map<string, number>();
    for (const record of predictor.process.records) {
      const key = record['idempotencyKey'];
      if (record['idempotency'] === 'executed' && typeof key === 'string' && key.startsWith(`${batchId}:`)) executions.set(key, (executions.get(key) ?? 0) + 1);
    }
    assert.deepEqual([...executions.entries()].filter(([, count]) => count > 1), [], 'no key executed twice');
    assert.equal(executions.size, total, 'every line executed once across both runs');
  });
});

describe('caller batch: a used-up daily quota stops the batch at once', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let predictor: RunningPredictor;

  before(async () => {
    dataDir = await temporaryDirectory('caller-quota');
    // demo-caller's plan allows 10 predictions a day.
    await writeFile(`${dataDir.path}/plans.json`, JSON.stringify({ plans: { standard: { burst: 20, refillPerSecond: 100, dailyQuota: 10 }, free: { burst: 2, refillPerSecond: 1, dailyQuota: 10 } }, defaultPlan: 'free' }));
    auth = await startAuthServer({ dataDir: `${dataDir.path}/auth` });
    predictor = await startPredictor({ issuer: auth.issuer, dataDir: `${dataDir.path}/predictor`, env: { PLANS_FILE: `${dataDir.path}/plans.json` } });
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  it('no line is attempted once the quota is spent; the summary says when it resets and how to resume; exit 9', async () => {
    const file = `${dataDir.path}/rows.jsonl`;
    const total = 40;
    await writeFile(file, `${Array.from({ length: total }, () => '[[5.1,3.5,1.4,0.2]]').join('\n')}\n`);
    const env = { ISSUER: auth.issuer, PREDICTOR_URL: predictor.url, PREDICTOR_AUDIENCE: TEST_AUDIENCE, CLIENT_ID: 'demo-caller', CLIENT_SECRET: DEV_ENV['DEMO_CALLER_SECRET']!, SCOPE: 'predict' };
    const batch = startCaller(env, ['batch', file, '--concurrency', '2']);
    const { code } = await batch.exited;
    assert.equal(code, 9, batch.output());
    const results = batch.stdoutLines.map((line) => JSON.parse(line) as { ok: boolean; attempted?: boolean });
    assert.equal(results.length, total);
    const ok = results.filter((result) => result.ok).length;
    // The client may stop a call a little before the 10th (it paces from the rate-limit fields, the last one in flight).
    assert.ok(ok >= 8 && ok <= 10, `${ok} lines succeeded out of a quota of 10\n${batch.stderrLines.join('\n')}`);
    const notAttempted = results.filter((result) => result.attempted === false).length;
    assert.ok(notAttempted >= total - ok - 2, `${notAttempted} lines not attempted: at most the two in flight were tried after the quota ran out`);
    const summary = batch.stderrLines.join('\n');
    assert.match(summary, new RegExp(`not attempted ${notAttempted}`));
    assert.match(summary, /^stopped: the daily quota is used up until \d{4}-\d\d-\d\dT[\d:.]+Z; \d+ lines not attempted\. After that, resume with: caller batch \S+ --resume [\w-]+ /m);
  });
});
