import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttemptEvent, PredictorClient } from '../client/predictor-client.js';
import { PredictorApiError, PredictorCallError, QuotaExhaustedError, RetriesExhaustedError } from '../client/errors.js';
import { ManualClock } from '../testing/manual-clock.js';
import { batchLineKey, formatSummary, INTERRUPTED_EXIT_CODE, runBatch, type BatchDeps } from './batch.js';
import { ExitCode } from './exit-codes.js';
import { parseBatch } from './inputs.js';

type Predict = (inputs: number[][], options: { idempotencyKey?: string; signal?: AbortSignal }) => Promise<unknown>;

async function runWith(predict: Predict, text: string, options: Partial<BatchDeps> & { isTty?: boolean } = {}) {
  const listeners: ((event: AttemptEvent) => void)[] = [];
  const clock = new ManualClock();
  const results: string[] = [];
  const progress: string[] = [];
  const emit = (event: Omit<AttemptEvent, 'waitMs' | 'error'>) => listeners.forEach((listener) => listener({ waitMs: 0, error: undefined, ...event }));
  const client = { predict: (inputs: number[][], callOptions: { idempotencyKey?: string; signal?: AbortSignal }) => predict.call({ emit, clock }, inputs, callOptions) } as unknown as PredictorClient;
  const summary = await runBatch(
    parseBatch(text),
    { client, tokenFetches: () => 1, clock, concurrency: 2, callOptions: {}, batchId: 'b-1', ...options },
    { result: (line) => results.push(line), progress: (line) => progress.push(line), isTty: options.isTty ?? false },
    { subscribe: (listener) => listeners.push(listener) },
  );
  return { summary, results: results.map((line) => JSON.parse(line) as { line: number; ok: boolean; replayed?: boolean; attempted?: boolean; error?: string }), progress };
}

describe('runBatch', () => {
  async function run(isTty: boolean) {
    return runWith(
      async function (this: { emit: (event: Omit<AttemptEvent, 'waitMs' | 'error'>) => void; clock: ManualClock }, inputs, options) {
        const event = (attempt: number, status: number, next: AttemptEvent['next']) => this.emit({ idempotencyKey: options.idempotencyKey, attempt, status, next, reason: 'backoff' });
        if (inputs[0]?.[0] === 9) {
          event(1, 422, 'stop');
          throw new PredictorApiError(422, { detail: 'bad row' }, undefined, { attempts: 1, totalWaitMs: 0, lastStatus: 422 });
        }
        event(1, 429, 'retry');
        this.clock.advance(10);
        event(2, 200, 'done');
        return { id: `pred-${options.idempotencyKey ?? 'x'}`, model: 'm', created: 0, predictions: [] };
      },
      '{"inputs": [[1,1,1,1]], "idempotency_key": "a"}\n\n[[2,2,2,2]]\n{"inputs": [[9,9,9,9]]}\n',
      { isTty },
    );
  }

  it('counts ok, failed, attempts, 429s and keeps the first failure exit code', async () => {
    const { summary, results } = await run(false);
    assert.deepEqual({ ok: summary.ok, failed: summary.failed, attempts: summary.attempts, status429: summary.status429, exitCode: summary.exitCode }, { ok: 2, failed: 1, attempts: 5, status429: 2, exitCode: ExitCode.invalidRequest });
    assert.equal(results.length, 3);
    assert.deepEqual(results.map((result) => result.line).sort(), [1, 3, 4]);
    assert.deepEqual(summary.failedLines, [4]);
    const text = formatSummary(summary, { resume: 'caller batch rows.jsonl --resume b-1', concurrency: 2 });
    assert.match(text, /ok 2, failed 1, not attempted 0, replayed 0\nattempts 5, 429s 2, 401 refreshes 0, token fetches 1\nlatency p50 \d+ ms/);
    assert.match(text, /^failed lines: 4$/m);
    assert.match(text, /to retry the failed lines once their cause is fixed: caller batch rows.jsonl --resume b-1 \(lines already done are replayed/);
  });

  it('draws a progress bar on a terminal and prints plain lines otherwise', async () => {
    assert.ok((await run(true)).progress.every((text) => text.startsWith('\r[')));
    assert.ok((await run(false)).progress.every((text) => /^progress \d+\/3/.test(text)));
  });

  it('keys a line without idempotency_key by batch id and line number, keeps a line’s own key, and counts replays', async () => {
    const keys: string[] = [];
    const { summary, results } = await runWith(
      async (_inputs, options) => {
        keys.push(options.idempotencyKey!);
        return { id: 'p' };
      },
      '[[1,1,1,1]]\n{"inputs": [[2,2,2,2]], "idempotency_key": "mine"}\n\n[[3,3,3,3]]\n',
      { wasReplayed: (key) => key === batchLineKey('b-1', 4) },
    );
    assert.deepEqual(keys.sort(), ['b-1:1', 'b-1:4', 'mine']);
    assert.equal(summary.replayed, 1);
    assert.deepEqual(results.find((result) => result.line === 4)?.replayed, true);
    assert.equal(results.find((result) => result.line === 1)?.replayed, undefined);
  });

  it('stops at once on a used-up quota: the lines in flight are cut short, the rest are not attempted and reported, exit 9', async () => {
    const resetsAt = new Date('2026-11-24T00:00:00Z');
    const attempted: number[] = [];
    const { summary, results } = await runWith(
      async (inputs, options) => {
        attempted.push(inputs[0]![0]!);
        if (inputs[0]![0] === 2) throw new QuotaExhaustedError(resetsAt, { attempts: 1, totalWaitMs: 0, lastStatus: 429 });
        // Line 1 waits until the batch stops it, as a call in a backoff wait would.
        await new Promise((_resolve, reject) => options.signal!.addEventListener('abort', () => reject(new PredictorCallError('call aborted', 'aborted', { attempts: 1, totalWaitMs: 0, lastStatus: 429 })), { once: true }));
        return {};
      },
      Array.from({ length: 10 }, (_, index) => `[[${index + 1},1,1,1]]`).join('\n'),
    );
    assert.deepEqual(attempted, [1, 2]);
    assert.deepEqual({ ok: summary.ok, failed: summary.failed, notAttempted: summary.notAttempted, exitCode: summary.exitCode }, { ok: 0, failed: 2, notAttempted: 8, exitCode: ExitCode.quotaExhausted });
    assert.equal(results.length, 10);
    assert.ok(results.filter((result) => result.attempted === false).every((result) => /not attempted: the daily quota is used up until 2026-11-24T00:00:00.000Z/.test(result.error!)));
    const text = formatSummary(summary, { resume: 'caller batch rows.jsonl --resume b-1', concurrency: 2 });
    assert.match(text, /stopped: the daily quota is used up until 2026-11-24T00:00:00.000Z; 8 lines not attempted\. After that, resume with: caller batch rows.jsonl --resume b-1/);
  });

  it('on an interrupt starts no further line, reports the rest as not attempted and exits 130', async () => {
    const interrupt = new AbortController();
    let calls = 0;
    const { summary, results } = await runWith(
      async () => {
        calls += 1;
        if (calls === 3) interrupt.abort();
        return {};
      },
      Array.from({ length: 10 }, () => '[[1,1,1,1]]').join('\n'),
      { signal: interrupt.signal, concurrency: 1 },
    );
    assert.deepEqual({ ok: summary.ok, notAttempted: summary.notAttempted, exitCode: summary.exitCode }, { ok: 3, notAttempted: 7, exitCode: INTERRUPTED_EXIT_CODE });
    assert.equal(results.length, 10);
    assert.match(formatSummary(summary, { resume: 'caller batch x --resume b-1', concurrency: 1 }), /interrupted: 7 lines not attempted, 0 failed or cut short\. Resume with: caller batch x --resume b-1/);
  });

  it('says to lower the concurrency when lines gave up on 429s', async () => {
    const { summary } = await runWith(
      async () => {
        throw new RetriesExhaustedError('retries exhausted', 'attempts-exhausted', { attempts: 5, totalWaitMs: 900, lastStatus: 429 });
      },
      '[[1,1,1,1]]\n[[1,1,1,1]]\n',
    );
    assert.equal(summary.rateLimited, 2);
    assert.match(formatSummary(summary, { resume: 'caller batch x --resume b-1', concurrency: 20 }), /2 lines gave up on rate limiting \(429\): lower --concurrency \(it was 20\), then resume with: caller batch x --resume b-1/);
  });
});
