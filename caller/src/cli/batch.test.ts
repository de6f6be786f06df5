import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttemptEvent, PredictorClient } from '../client/predictor-client.js';
import { PredictorApiError } from '../client/errors.js';
import { ManualClock } from '../testing/manual-clock.js';
import { formatSummary, runBatch } from './batch.js';
import { ExitCode } from './exit-codes.js';
import { parseBatch } from './inputs.js';

describe('runBatch', () => {
  async function run(isTty: boolean) {
    const listeners: ((event: AttemptEvent) => void)[] = [];
    const clock = new ManualClock();
    const client = {
      predict: async (inputs: number[][], options: { idempotencyKey?: string }) => {
        const event = (attempt: number, status: number, next: AttemptEvent['next']) =>
          listeners.forEach((listener) => listener({ idempotencyKey: options.idempotencyKey, attempt, status, error: undefined, next, waitMs: 0, reason: 'backoff' }));
        if (inputs[0]?.[0] === 9) {
          event(1, 422, 'stop');
          throw new PredictorApiError(422, { detail: 'bad row' }, undefined, { attempts: 1, totalWaitMs: 0, lastStatus: 422 });
        }
        event(1, 429, 'retry');
        clock.advance(10);
        event(2, 200, 'done');
        return { id: `pred-${options.idempotencyKey ?? 'x'}`, model: 'm', created: 0, predictions: [] };
      },
    } as unknown as PredictorClient;
    const lines = parseBatch('{"inputs": [[1,1,1,1]], "idempotency_key": "a"}\n\n[[2,2,2,2]]\n{"inputs": [[9,9,9,9]]}\n');
    const results: string[] = [];
    const progress: string[] = [];
    const summary = await runBatch(lines, { client, tokenFetches: () => 1, clock, concurrency: 2, callOptions: {} }, { result: (text) => results.push(text), progress: (text) => progress.push(text), isTty }, { subscribe: (listener) => listeners.push(listener) });
    return { summary, results, progress };
  }

  it('counts ok, failed, attempts, 429s and keeps the first failure exit code', async () => {
    const { summary, results } = await run(false);
    assert.deepEqual({ ok: summary.ok, failed: summary.failed, attempts: summary.attempts, status429: summary.status429, exitCode: summary.exitCode }, { ok: 2, failed: 1, attempts: 5, status429: 2, exitCode: ExitCode.invalidRequest });
    assert.equal(results.length, 3);
    assert.deepEqual(results.map((line) => (JSON.parse(line) as { line: number }).line).sort(), [1, 3, 4]);
    assert.match(formatSummary(summary), /ok 2, failed 1\nattempts 5, 429s 2, 401 refreshes 0, token fetches 1\nlatency p50 \d+ ms/);
  });

  it('draws a progress bar on a terminal and prints plain lines otherwise', async () => {
    assert.ok((await run(true)).progress.every((text) => text.startsWith('\r[')));
    assert.ok((await run(false)).progress.every((text) => /^progress \d+\/3/.test(text)));
  });
});
