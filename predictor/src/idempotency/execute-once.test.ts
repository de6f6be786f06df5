import assert from 'node:assert/strict';
import { afterEach, describe, it, mock } from 'node:test';
import { createLogger, type UsageEvent } from '@m2m/common';
import { createMetrics } from '../http/metrics.js';
import { IdempotencyLeaseLost, StoreUnavailable } from '../http/problems.js';
import { executeOnce, type Execution, type IdempotencyOutcome } from './execute-once.js';
import { MemoryIdempotencyStore } from './memory.js';
import type { IdempotencyStore, LeaseOutcome, StoredResponse } from './store.js';
import { LEASE_MS, ManualClock } from './store-contract.js';

const SCOPE = { clientId: 'client-a', key: 'key-1', fingerprint: 'fp-1' };
const answer = (id: string): StoredResponse => ({ status: 200, headers: { 'content-type': 'application/json' }, body: `{"id":"${id}"}` });
/** An execution as the predict route returns it (no usage event: the outbox has tests of its own). */
const executed = (id: string): Execution => ({ response: answer(id) });

function setup(store: IdempotencyStore) {
  const outcomes: IdempotencyOutcome[] = [];
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger('predictor', 'info', { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  const deps = { store, metrics: createMetrics({ collectProcessMetrics: false }), logger, onOutcome: (outcome: IdempotencyOutcome) => outcomes.push(outcome) };
  return { deps, outcomes, lines };
}

/** A store whose completions fail (the database went away after the claim) until `failing` is turned off. */
class FailingCompletions extends MemoryIdempotencyStore {
  failing = true;
  releases = 0;

  override async complete(clientId: string, key: string, token: number, response: StoredResponse, usage?: UsageEvent): Promise<LeaseOutcome> {
    if (this.failing) throw Object.assign(new Error('Connection terminated unexpectedly'), { code: 'ECONNRESET' });
    return super.complete(clientId, key, token, response, usage);
  }

  override async release(clientId: string, key: string, token: number): Promise<LeaseOutcome> {
    this.releases += 1;
    return super.release(clientId, key, token);
  }
}

describe('executeOnce: commit or refuse', () => {
  it('answers 503 instead of a result it could not store, and the retry executes once more; replays return the answer sent', async () => {
    const store = new FailingCompletions({ now: new ManualClock().now });
    const { deps, outcomes } = setup(store);
    await assert.rejects(
      executeOnce(deps, SCOPE, async () => executed('pred_first')),
      (error: unknown) => error instanceof StoreUnavailable && error.status === 503 && error.headers['retry-after'] === '1',
    );
    assert.deepEqual(outcomes, ['refused']);
    assert.equal(store.releases, 1, 'the lease was released, so the retry need not wait for it to run out');

    store.failing = false;
    const retried = await executeOnce(deps, SCOPE, async () => executed('pred_second'));
    assert.deepEqual(retried, { response: answer('pred_second'), replayed: false });
    const replay = await executeOnce(deps, SCOPE, async () => assert.fail('a completed key never executes again'));
    assert.deepEqual(replay, { response: answer('pred_second'), replayed: true }, 'the replay is the answer the client was sent, the only one');
    assert.deepEqual(outcomes, ['refused', 'executed', 'replayed']);
  });

  it('drops the result of a holder whose lease was taken over (it stalled past the lease), and keeps the successor\'s', async () => {
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore({ now: clock.now });
    const { deps, outcomes, lines } = setup(store);
    const successor = setup(store);
    let successorAnswer: Promise<unknown> = Promise.resolve();

    await assert.rejects(
      executeOnce(deps, SCOPE, async () => {
        clock.advance(LEASE_MS); // stalled (e.g. a GC pause, a frozen VM) past its lease, without renewing
        successorAnswer = executeOnce(successor.deps, SCOPE, async () => executed('pred_successor'));
        await successorAnswer;
        return executed('pred_stalled');
      }),
      IdempotencyLeaseLost,
    );
    assert.deepEqual(outcomes, ['lease_lost']);
    assert.deepEqual(successor.outcomes, ['executed']);
    assert.equal(lines.filter((line) => line['event'] === 'idempotency.lease_lost').length, 1);
    assert.deepEqual(await executeOnce(deps, SCOPE, async () => assert.fail('replayed')), { response: answer('pred_successor'), replayed: true });
  });

  it('releases the key when execution throws, and stores nothing', async () => {
    const store = new MemoryIdempotencyStore({ now: new ManualClock().now });
    const { deps, outcomes } = setup(store);
    await assert.rejects(executeOnce(deps, SCOPE, async () => Promise.reject(new Error('429'))), /429/);
    assert.deepEqual(outcomes, ['released']);
    assert.equal((await store.claim(SCOPE.clientId, SCOPE.key, SCOPE.fingerprint)).outcome, 'claimed');
  });
});

describe('executeOnce: the lease is renewed while the model runs', () => {
  afterEach(() => mock.timers.reset());

  it('renews every third of the lease, so a long execution keeps its key and finishes as the one answer', async () => {
    mock.timers.enable({ apis: ['setInterval'] });
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore({ now: clock.now });
    const { deps, outcomes } = setup(store);
    let finish!: () => void;
    const running = executeOnce(deps, SCOPE, () => new Promise<Execution>((resolve) => (finish = () => resolve(executed('pred_long')))));
    await Promise.resolve();
    for (let beat = 0; beat < 9; beat += 1) {
      clock.advance(LEASE_MS / 3);
      mock.timers.tick(LEASE_MS / 3);
      await new Promise((resolve) => setImmediate(resolve));
    }
    // Three leases have passed; without renewals a retry would have taken the key over.
    const duplicate = await store.claim(SCOPE.clientId, SCOPE.key, SCOPE.fingerprint);
    assert.equal(duplicate.outcome, 'in-flight');
    finish();
    assert.deepEqual(await running, { response: answer('pred_long'), replayed: false });
    assert.deepEqual(outcomes, ['executed']);
  });

  it('stops renewing once its lease is reported lost, and does not send its result', async () => {
    mock.timers.enable({ apis: ['setInterval'] });
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore({ now: clock.now });
    const { deps, outcomes } = setup(store);
    let finish!: () => void;
    const running = executeOnce(deps, SCOPE, () => new Promise<Execution>((resolve) => (finish = () => resolve(executed('pred_late')))));
    await Promise.resolve();
    clock.advance(LEASE_MS);
    const takeOver = await store.claim(SCOPE.clientId, SCOPE.key, SCOPE.fingerprint);
    assert.equal(takeOver.outcome, 'claimed');
    mock.timers.tick(LEASE_MS / 3);
    await new Promise((resolve) => setImmediate(resolve));
    finish();
    await assert.rejects(running, IdempotencyLeaseLost);
    assert.deepEqual(outcomes, ['lease_lost']);
    assert.equal((await store.claim(SCOPE.clientId, SCOPE.key, SCOPE.fingerprint)).outcome, 'in-flight', 'the successor still holds the key');
  });

  it('never starts a renewal while the previous one is still waiting on a slow store', async () => {
    mock.timers.enable({ apis: ['setInterval'] });
    const store = new MemoryIdempotencyStore({ now: new ManualClock().now });
    let renewals = 0;
    store.renew = () => {
      renewals += 1;
      return new Promise<LeaseOutcome>(() => {}); // a store that never answers
    };
    const { deps } = setup(store);
    let finish!: () => void;
    const running = executeOnce(deps, SCOPE, () => new Promise<Execution>((resolve) => (finish = () => resolve(executed('pred_slow')))));
    await Promise.resolve();
    for (let beat = 0; beat < 6; beat += 1) {
      mock.timers.tick(LEASE_MS / 3);
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.equal(renewals, 1, 'one renewal outstanding, not one per beat');
    finish();
    mock.timers.reset();
    void running.catch(() => {});
  });
});
