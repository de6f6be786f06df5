import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { IdempotencyStoreClosed, type ClaimResult, type IdempotencyStore, type StoredResponse } from './store.js';

/**
 * The behaviour every `IdempotencyStore` must show, registered as `node:test` tests for
 * one implementation: `memory.test.ts` and `sqlite.test.ts` run it, and so will any later store.
 */

export const RETENTION_MS = 24 * 60 * 60 * 1000;
export const LOCK_TIMEOUT_MS = 15_000;
/** 2023-11-14T22:13:20Z: any fixed instant will do, as long as no test reads the real clock. */
export const START_MS = 1_700_000_000_000;

/** Time that moves only when a test says so. */
export class ManualClock {
  #ms: number;

  constructor(startMs = START_MS) {
    this.#ms = startMs;
  }

  readonly now = (): number => this.#ms;

  advance(ms: number): void {
    this.#ms += ms;
  }
}

export interface ContractStoreOptions {
  retentionMs: number;
  lockTimeoutMs: number;
  now: () => number;
}

/** Makes a new, empty store; the suite closes it after each test. */
export type StoreFactory = (options: ContractStoreOptions) => IdempotencyStore | Promise<IdempotencyStore>;

/** Not an accident of JSON: unicode outside the BMP, NUL, CR LF, trailing whitespace. */
export const AWKWARD_BODY = '{"species":"setosa","probabilities":[0.97,0.02,0.01],"note":"é ✓ 🌸 \\u0000"}\r\n\u0000 \t';

export const RESPONSE: StoredResponse = {
  status: 200,
  headers: { 'content-type': 'application/json; charset=utf-8', 'x-model-version': 'iris-softmax@1' },
  body: AWKWARD_BODY,
};

export function describeIdempotencyStoreContract(name: string, createStore: StoreFactory): void {
  describe(`${name} (IdempotencyStore contract)`, () => {
    const opened: IdempotencyStore[] = [];
    let clock: ManualClock;

    async function newStore(overrides: Partial<ContractStoreOptions> = {}): Promise<IdempotencyStore> {
      clock = new ManualClock();
      const store = await createStore({ retentionMs: RETENTION_MS, lockTimeoutMs: LOCK_TIMEOUT_MS, now: clock.now, ...overrides });
      opened.push(store);
      return store;
    }

    afterEach(async () => {
      await Promise.all(opened.splice(0).map((store) => store.close()));
    });

    it('claims a new key, then answers in-flight with Retry-After from the remaining lock time', async () => {
      const store = await newStore();
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'claimed' });
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 15 });
      clock.advance(LOCK_TIMEOUT_MS - 1_500);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 2 });
      clock.advance(1_499);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 1 });
    });

    it('caps Retry-After at the lock timeout when the clock went back', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      clock.advance(-60 * 60 * 1000);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 15 });
    });

    it('replays a completed key byte-identically', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      await store.complete('client-a', 'key-1', 'fp-1', RESPONSE);
      const first = await store.claim('client-a', 'key-1', 'fp-1');
      assert.deepEqual(first, { outcome: 'replay', response: RESPONSE });
      assert.ok(first.outcome === 'replay');
      assert.ok(Buffer.from(first.response.body).equals(Buffer.from(AWKWARD_BODY)));

      // What a caller does to a replayed response must not change the next replay.
      first.response.headers['idempotent-replayed'] = 'true';
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
    });

    it('keeps replaying until the retention ends, however late the retry comes', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      await store.complete('client-a', 'key-1', 'fp-1', RESPONSE);
      clock.advance(RETENTION_MS - 1);
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'replay');
      clock.advance(1);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'claimed' });
    });

    it('answers mismatch to another request under a key in flight', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-2'), { outcome: 'mismatch' });
    });

    it('answers mismatch to another request under a completed key', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      await store.complete('client-a', 'key-1', 'fp-1', RESPONSE);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-2'), { outcome: 'mismatch' });
    });

    it('answers mismatch to another request even once the first claim was abandoned', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      clock.advance(LOCK_TIMEOUT_MS);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-2'), { outcome: 'mismatch' });
    });

    it('lets a released key be claimed again', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      await store.release('client-a', 'key-1', 'fp-1');
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'claimed' });
    });

    it('lets a released key be used for another request', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      await store.release('client-a', 'key-1', 'fp-1');
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-2'), { outcome: 'claimed' });
    });

    it('ignores a release by another request or of a completed key', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      await store.release('client-a', 'key-1', 'fp-2');
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'in-flight');

      await store.complete('client-a', 'key-1', 'fp-1', RESPONSE);
      await store.release('client-a', 'key-1', 'fp-1');
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'replay');
    });

    it('lets exactly one of two racing retries take over a claim abandoned for the lock timeout', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      clock.advance(LOCK_TIMEOUT_MS - 1);
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'in-flight');
      clock.advance(1);

      const results = await Promise.all([store.claim('client-a', 'key-1', 'fp-1'), store.claim('client-a', 'key-1', 'fp-1')]);
      assert.deepEqual(sortByOutcome(results), [{ outcome: 'claimed' }, { outcome: 'in-flight', retryAfterSeconds: 15 }]);
    });

    it('keeps the first completion when a request whose claim was taken over completes late', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      clock.advance(LOCK_TIMEOUT_MS);
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'claimed');
      const takenOver = { ...RESPONSE, body: '{"attempt":2}' };
      await store.complete('client-a', 'key-1', 'fp-1', takenOver);
      await store.complete('client-a', 'key-1', 'fp-1', { ...RESPONSE, body: '{"attempt":1}' });
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: takenOver });
    });

    it('stores a completion whose claim was released meanwhile, so a retry replays it', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      await store.release('client-a', 'key-1', 'fp-1');
      await store.complete('client-a', 'key-1', 'fp-1', RESPONSE);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
    });

    it('scopes keys per client', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      await store.complete('client-a', 'key-1', 'fp-1', RESPONSE);
      assert.deepEqual(await store.claim('client-b', 'key-1', 'fp-1'), { outcome: 'claimed' });
      assert.deepEqual(await store.claim('client-b', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 15 });
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'replay');
    });

    it('does not confuse clients and keys that concatenate alike', async () => {
      const store = await newStore();
      assert.deepEqual(await store.claim('client:a', 'key', 'fp-1'), { outcome: 'claimed' });
      assert.deepEqual(await store.claim('client', 'a:key', 'fp-1'), { outcome: 'claimed' });
    });

    it('purges expired records in batches, and only expired ones', async () => {
      const store = await newStore();
      for (const key of ['k1', 'k2', 'k3', 'k4', 'k5']) {
        await store.claim('client-a', key, 'fp-1');
        await store.complete('client-a', key, 'fp-1', RESPONSE);
      }
      clock.advance(1);
      await store.claim('client-a', 'k6', 'fp-1');
      await store.complete('client-a', 'k6', 'fp-1', RESPONSE);

      clock.advance(RETENTION_MS - 2);
      assert.equal(await store.purgeExpired(), 0);
      clock.advance(1);
      assert.equal(await store.purgeExpired(2), 2);
      assert.equal(await store.purgeExpired(2), 2);
      assert.equal(await store.purgeExpired(2), 1);
      assert.equal(await store.purgeExpired(2), 0);
      assert.equal((await store.claim('client-a', 'k6', 'fp-1')).outcome, 'replay');
      assert.deepEqual(await store.claim('client-a', 'k1', 'fp-2'), { outcome: 'claimed' });
    });

    it('purges a claim abandoned for the whole retention period', async () => {
      const store = await newStore();
      await store.claim('client-a', 'key-1', 'fp-1');
      clock.advance(RETENTION_MS);
      assert.equal(await store.purgeExpired(), 1);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-2'), { outcome: 'claimed' });
    });

    it('rejects a batch size that is not a positive integer', async () => {
      const store = await newStore();
      await assert.rejects(store.purgeExpired(0), RangeError);
      await assert.rejects(store.purgeExpired(1.5), RangeError);
    });

    it('never purges a claim still in flight, even with a retention shorter than the lock', async () => {
      const store = await newStore({ retentionMs: 1_000 });
      await store.claim('client-a', 'key-1', 'fp-1');
      clock.advance(LOCK_TIMEOUT_MS - 1);
      assert.equal(await store.purgeExpired(), 0);
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'in-flight');
    });

    it('gives exactly one of 200 concurrent claims the key', async () => {
      const store = await newStore();
      const results = await Promise.all(Array.from({ length: 200 }, () => store.claim('client-a', 'key-1', 'fp-1')));
      assert.equal(results.filter((result) => result.outcome === 'claimed').length, 1);
      assert.equal(results.filter((result) => result.outcome === 'in-flight').length, 199);
    });

    it('is healthy until closed, then refuses to be used', async () => {
      const store = await newStore();
      assert.equal(await store.healthy(), true);
      await store.close();
      assert.equal(await store.healthy(), false);
      await assert.rejects(store.claim('client-a', 'key-1', 'fp-1'), IdempotencyStoreClosed);
      await store.close(); // twice is harmless
    });
  });
}

function sortByOutcome(results: ClaimResult[]): ClaimResult[] {
  return [...results].sort((a, b) => a.outcome.localeCompare(b.outcome));
}
