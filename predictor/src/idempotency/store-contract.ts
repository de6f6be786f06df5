import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { UsageEvent } from '@m2m/common';
import { IdempotencyStoreClosed, type IdempotencyStore, type StoredResponse } from './store.js';

/**
 * The behaviour every `IdempotencyStore` must show, registered as `node:test` tests for
 * one implementation: `memory.test.ts`, `sqlite.test.ts` and `postgres.test.ts` run it.
 */

export const RETENTION_MS = 24 * 60 * 60 * 1000;
export const LEASE_MS = 5_000;
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
  outboxRetentionMs?: number;
  leaseMs: number;
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

export function describeIdempotencyStoreContract(name: string, createStore: StoreFactory, options: { skip?: string | false } = {}): void {
  describe(`${name} (IdempotencyStore contract)`, options, () => {
    const opened: IdempotencyStore[] = [];
    let clock: ManualClock;

    async function newStore(overrides: Partial<ContractStoreOptions> = {}): Promise<IdempotencyStore> {
      clock = new ManualClock();
      const store = await createStore({ retentionMs: RETENTION_MS, leaseMs: LEASE_MS, now: clock.now, ...overrides });
      opened.push(store);
      return store;
    }

    afterEach(async () => {
      await Promise.all(opened.splice(0).map((store) => store.close()));
    });

    it('claims a new key with a token, then answers in-flight with Retry-After from the remaining lease', async () => {
      const store = await newStore();
      const result = await store.claim('client-a', 'key-1', 'fp-1');
      assert.equal(result.outcome, 'claimed');
      assert.ok(result.outcome === 'claimed' && Number.isSafeInteger(result.token) && result.token > 0);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 5 });
      clock.advance(LEASE_MS - 1_500);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 2 });
      clock.advance(1_499);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 1 });
    });

    it('caps Retry-After at the lease when the clock went back', async () => {
      const store = await newStore();
      await claimToken(store, 'client-a', 'key-1', 'fp-1');
      clock.advance(-60 * 60 * 1000);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 5 });
    });

    it('replays a completed key byte-identically', async () => {
      const store = await newStore();
      const token = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      assert.equal(await store.complete('client-a', 'key-1', token, RESPONSE), 'ok');
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
      await store.complete('client-a', 'key-1', await claimToken(store, 'client-a', 'key-1', 'fp-1'), RESPONSE);
      clock.advance(RETENTION_MS - 1);
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'replay');
      clock.advance(1);
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'claimed');
    });

    it('answers mismatch to another request under a key in flight', async () => {
      const store = await newStore();
      await claimToken(store, 'client-a', 'key-1', 'fp-1');
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-2'), { outcome: 'mismatch' });
    });

    it('answers mismatch to another request under a completed key', async () => {
      const store = await newStore();
      await store.complete('client-a', 'key-1', await claimToken(store, 'client-a', 'key-1', 'fp-1'), RESPONSE);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-2'), { outcome: 'mismatch' });
    });

    it('answers mismatch to another request even once the first lease ran out', async () => {
      const store = await newStore();
      await claimToken(store, 'client-a', 'key-1', 'fp-1');
      clock.advance(LEASE_MS);
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-2'), { outcome: 'mismatch' });
    });

    it('lets a released key be claimed again, for the same or another request', async () => {
      const store = await newStore();
      assert.equal(await store.release('client-a', 'key-1', await claimToken(store, 'client-a', 'key-1', 'fp-1')), 'ok');
      assert.equal(await store.release('client-a', 'key-1', await claimToken(store, 'client-a', 'key-1', 'fp-1')), 'ok');
      await claimToken(store, 'client-a', 'key-1', 'fp-2');
    });

    it('refuses release with another token or of a completed key', async () => {
      const store = await newStore();
      const token = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      assert.equal(await store.release('client-a', 'key-1', token + 1_000), 'lost');
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'in-flight');

      assert.equal(await store.complete('client-a', 'key-1', token, RESPONSE), 'ok');
      assert.equal(await store.release('client-a', 'key-1', token), 'lost');
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'replay');
    });

    it('keeps a renewed lease past its first term, and lets it be taken over once renewals stop', async () => {
      const store = await newStore();
      const token = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      for (let beat = 0; beat < 5; beat += 1) {
        clock.advance(LEASE_MS - 1);
        assert.equal(await store.renew('client-a', 'key-1', token), 'ok');
        assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 5 });
      }
      clock.advance(LEASE_MS);
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'claimed');
    });

    it('lets exactly one of two racing retries take over a lease that ran out, with a greater token', async () => {
      const store = await newStore();
      const first = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      clock.advance(LEASE_MS - 1);
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'in-flight');
      clock.advance(1);

      const results = await Promise.all([store.claim('client-a', 'key-1', 'fp-1'), store.claim('client-a', 'key-1', 'fp-1')]);
      const winners = results.filter((result) => result.outcome === 'claimed');
      assert.equal(winners.length, 1, JSON.stringify(results));
      assert.ok(winners[0]!.token > first);
      assert.deepEqual(results.find((result) => result.outcome !== 'claimed'), { outcome: 'in-flight', retryAfterSeconds: 5 });
    });

    it('fences a holder whose lease was taken over: its renew, complete and release change nothing', async () => {
      const store = await newStore();
      const stale = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      clock.advance(LEASE_MS);
      const current = await claimToken(store, 'client-a', 'key-1', 'fp-1');

      assert.equal(await store.renew('client-a', 'key-1', stale), 'lost');
      assert.equal(await store.release('client-a', 'key-1', stale), 'lost');
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 5 }, 'the successor still holds it');
      assert.equal(await store.complete('client-a', 'key-1', stale, { ...RESPONSE, body: '{"attempt":1}' }), 'lost');
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'in-flight');

      const successor = { ...RESPONSE, body: '{"attempt":2}' };
      assert.equal(await store.complete('client-a', 'key-1', current, successor), 'ok');
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: successor });
    });

    it('never reissues a token: a holder whose key was released and claimed again stays fenced', async () => {
      const store = await newStore();
      const stale = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      clock.advance(LEASE_MS);
      const taker = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      assert.equal(await store.release('client-a', 'key-1', taker), 'ok');
      const third = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      assert.ok(third > taker && taker > stale);
      assert.equal(await store.complete('client-a', 'key-1', stale, RESPONSE), 'lost');
      assert.equal(await store.complete('client-a', 'key-1', taker, RESPONSE), 'lost');
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'in-flight');
    });

    it('lets a holder whose lease ran out complete while nobody took it over', async () => {
      const store = await newStore();
      const token = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      clock.advance(LEASE_MS * 3);
      assert.equal(await store.renew('client-a', 'key-1', token), 'ok');
      assert.equal(await store.complete('client-a', 'key-1', token, RESPONSE), 'ok');
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
    });

    it('keeps the first completion: a second one with the same token is lost', async () => {
      const store = await newStore();
      const token = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      assert.equal(await store.complete('client-a', 'key-1', token, RESPONSE), 'ok');
      assert.equal(await store.complete('client-a', 'key-1', token, { ...RESPONSE, body: '{"again":true}' }), 'lost');
      assert.deepEqual(await store.claim('client-a', 'key-1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
    });

    it('stores nothing for a holder whose released claim is gone', async () => {
      const store = await newStore();
      const token = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      assert.equal(await store.release('client-a', 'key-1', token), 'ok');
      assert.equal(await store.complete('client-a', 'key-1', token, RESPONSE), 'lost');
      assert.equal(await store.renew('client-a', 'key-1', token), 'lost');
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'claimed');
    });

    it('scopes keys and tokens per client', async () => {
      const store = await newStore();
      const token = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      assert.equal(await store.complete('client-b', 'key-1', token, RESPONSE), 'lost');
      await store.complete('client-a', 'key-1', token, RESPONSE);
      await claimToken(store, 'client-b', 'key-1', 'fp-1');
      assert.deepEqual(await store.claim('client-b', 'key-1', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 5 });
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'replay');
    });

    it('does not confuse clients and keys that concatenate alike', async () => {
      const store = await newStore();
      await claimToken(store, 'client:a', 'key', 'fp-1');
      await claimToken(store, 'client', 'a:key', 'fp-1');
    });

    it('purges expired records in batches, and only expired ones, counting those left', async () => {
      const store = await newStore();
      for (const key of ['k1', 'k2', 'k3', 'k4', 'k5']) await store.complete('client-a', key, await claimToken(store, 'client-a', key, 'fp-1'), RESPONSE);
      clock.advance(1);
      await store.complete('client-a', 'k6', await claimToken(store, 'client-a', 'k6', 'fp-1'), RESPONSE);

      clock.advance(RETENTION_MS - 2);
      assert.equal(await store.countExpired(), 0);
      assert.equal(await store.purgeExpired(), 0);
      clock.advance(1);
      assert.equal(await store.countExpired(), 5);
      assert.equal(await store.purgeExpired(2), 2);
      assert.equal(await store.purgeExpired(2), 2);
      assert.equal(await store.countExpired(), 1);
      assert.equal(await store.purgeExpired(2), 1);
      assert.equal(await store.purgeExpired(2), 0);
      assert.equal(await store.countExpired(), 0);
      assert.equal((await store.claim('client-a', 'k6', 'fp-1')).outcome, 'replay');
      await claimToken(store, 'client-a', 'k1', 'fp-2');
    });

    it('purges a claim abandoned for the whole retention period', async () => {
      const store = await newStore();
      await claimToken(store, 'client-a', 'key-1', 'fp-1');
      clock.advance(RETENTION_MS);
      assert.equal(await store.purgeExpired(), 1);
      await claimToken(store, 'client-a', 'key-1', 'fp-2');
    });

    it('rejects a batch size that is not a positive integer', async () => {
      const store = await newStore();
      await assert.rejects(store.purgeExpired(0), RangeError);
      await assert.rejects(store.purgeExpired(1.5), RangeError);
    });

    it('never purges a claim still renewed, even with a retention shorter than its run', async () => {
      const store = await newStore({ retentionMs: 1_000 });
      const token = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      for (let beat = 0; beat < 3; beat += 1) {
        clock.advance(LEASE_MS - 1);
        assert.equal(await store.renew('client-a', 'key-1', token), 'ok');
        assert.equal(await store.purgeExpired(), 0);
      }
      assert.equal((await store.claim('client-a', 'key-1', 'fp-1')).outcome, 'in-flight');
      assert.equal(await store.complete('client-a', 'key-1', token, RESPONSE), 'ok');
    });

    it('gives exactly one of 200 concurrent claims the key', async () => {
      const store = await newStore();
      const results = await Promise.all(Array.from({ length: 200 }, () => store.claim('client-a', 'key-1', 'fp-1')));
      assert.equal(results.filter((result) => result.outcome === 'claimed').length, 1);
      assert.equal(results.filter((result) => result.outcome === 'in-flight').length, 199);
    });

    const usage = (id: string): UsageEvent => ({
      id,
      type: 'prediction.executed',
      clientId: 'client-a',
      plan: 'standard',
      credential: { method: 'bearer-jwt', id: 'kid-1' },
      rows: 2,
      modelId: 'iris-softmax@1',
      idempotencyKey: 'key-1',
      occurredAt: new Date(START_MS).toISOString(),
    });
    /** A relay round that delivers everything it is given (or only `accept`), recording what it saw. */
    const deliverAll = (seen: string[], accept?: (id: string) => boolean) => async (events: UsageEvent[]) => {
      seen.push(...events.map((event) => event.id));
      return new Set(events.map((event) => event.id).filter((id) => accept?.(id) ?? true));
    };

    it('puts the usage event of a completion in the outbox with it, and relays it once', async () => {
      const store = await newStore();
      const token = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      assert.equal(await store.complete('client-a', 'key-1', token, RESPONSE, usage('pred_1')), 'ok');
      assert.deepEqual(await store.backlog(), { count: 1, oldestAgeMs: 0 });
      const seen: string[] = [];
      const delivered: UsageEvent[] = [];
      assert.deepEqual(await store.relay(10, async (events) => (delivered.push(...events), deliverAll(seen)(events))), { claimed: 1, delivered: 1 });
      assert.deepEqual(delivered, [usage('pred_1')], 'the event comes out as it went in');
      assert.deepEqual(await store.relay(10, deliverAll(seen)), { claimed: 0, delivered: 0 });
      assert.deepEqual(seen, ['pred_1']);
      assert.deepEqual(await store.backlog(), { count: 0, oldestAgeMs: undefined });
    });

    it('writes no event for a completion whose lease was lost', async () => {
      const store = await newStore();
      const stale = await claimToken(store, 'client-a', 'key-1', 'fp-1');
      clock.advance(LEASE_MS);
      await claimToken(store, 'client-a', 'key-1', 'fp-1');
      assert.equal(await store.complete('client-a', 'key-1', stale, RESPONSE, usage('pred_stale')), 'lost');
      assert.equal((await store.backlog()).count, 0);
    });

    it('appends the event of a request without a key alone, and relays in the order written', async () => {
      const store = await newStore();
      await store.append(usage('pred_a'));
      clock.advance(1_500);
      await store.append(usage('pred_b'));
      await store.complete('client-a', 'key-1', await claimToken(store, 'client-a', 'key-1', 'fp-1'), RESPONSE, usage('pred_c'));
      assert.deepEqual(await store.backlog(), { count: 3, oldestAgeMs: 1_500 });
      const seen: string[] = [];
      await store.relay(2, deliverAll(seen));
      await store.relay(2, deliverAll(seen));
      assert.deepEqual(seen, ['pred_a', 'pred_b', 'pred_c']);
    });

    it('marks sent only what was delivered: the rest, or all when delivery fails, is relayed again', async () => {
      const store = await newStore();
      for (const id of ['pred_1', 'pred_2', 'pred_3']) await store.append(usage(id));
      const seen: string[] = [];
      assert.deepEqual(await store.relay(10, deliverAll(seen, (id) => id !== 'pred_2')), { claimed: 3, delivered: 2 });
      await assert.rejects(store.relay(10, async () => Promise.reject(new Error('broker down'))), /broker down/);
      assert.deepEqual(await store.relay(10, deliverAll(seen)), { claimed: 1, delivered: 1 });
      assert.deepEqual(seen, ['pred_1', 'pred_2', 'pred_3', 'pred_2']);
    });

    it('never hands one event to two relays running at once', async () => {
      const store = await newStore();
      for (let index = 0; index < 20; index += 1) await store.append(usage(`pred_${index}`));
      const seen: string[] = [];
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const slow = store.relay(10, async (events) => (await gate, deliverAll(seen)(events)));
      const fast = store.relay(10, deliverAll(seen));
      release();
      await Promise.all([slow, fast]);
      await store.relay(20, deliverAll(seen));
      assert.equal(seen.length, 20, `each once: ${seen.join(' ')}`);
      assert.equal(new Set(seen).size, 20);
    });

    it('purges sent events after the outbox retention, never unsent ones', async () => {
      const store = await newStore({ outboxRetentionMs: 60_000 });
      await store.append(usage('pred_sent'));
      await store.append(usage('pred_kept'));
      await store.relay(10, deliverAll([], (id) => id === 'pred_sent'));
      clock.advance(60_000 - 1);
      assert.equal(await store.purgeSent(), 0);
      clock.advance(1);
      assert.equal(await store.purgeSent(), 1);
      assert.equal(await store.purgeSent(), 0);
      assert.equal((await store.backlog()).count, 1);
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


/** Claims a key that must be free and returns its lease's token. */
export async function claimToken(store: IdempotencyStore, clientId: string, key: string, fingerprint: string): Promise<number> {
  const result = await store.claim(clientId, key, fingerprint);
  assert.equal(result.outcome, 'claimed', JSON.stringify(result));
  return (result as { token: number }).token;
}

/** Claims a free key and completes it with `response`. */
export async function claimAndComplete(store: IdempotencyStore, clientId: string, key: string, fingerprint: string, response: StoredResponse): Promise<void> {
  assert.equal(await store.complete(clientId, key, await claimToken(store, clientId, key, fingerprint), response), 'ok');
}
