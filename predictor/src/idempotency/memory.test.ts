import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryIdempotencyStore } from './memory.js';
import { describeIdempotencyStoreContract, LOCK_TIMEOUT_MS, ManualClock, RESPONSE } from './store-contract.js';

describeIdempotencyStoreContract('MemoryIdempotencyStore', (options) => new MemoryIdempotencyStore(options));

describe('MemoryIdempotencyStore bounds', () => {
  async function completed(store: MemoryIdempotencyStore, key: string): Promise<void> {
    assert.equal((await store.claim('client-a', key, 'fp-1')).outcome, 'claimed');
    await store.complete('client-a', key, 'fp-1', RESPONSE);
  }

  it('evicts the least recently used completed record beyond maxEntries', async () => {
    const store = new MemoryIdempotencyStore({ maxEntries: 3, now: new ManualClock().now });
    await completed(store, 'k1');
    await completed(store, 'k2');
    await completed(store, 'k3');
    assert.equal((await store.claim('client-a', 'k1', 'fp-1')).outcome, 'replay'); // k1 is now the most recent
    await completed(store, 'k4');

    assert.equal(store.size, 3);
    assert.equal((await store.claim('client-a', 'k1', 'fp-1')).outcome, 'replay');
    assert.equal((await store.claim('client-a', 'k3', 'fp-1')).outcome, 'replay');
    assert.equal((await store.claim('client-a', 'k4', 'fp-1')).outcome, 'replay');
    assert.equal((await store.claim('client-a', 'k2', 'fp-1')).outcome, 'claimed');
  });

  it('never evicts a claim whose lock still runs, and evicts it once abandoned', async () => {
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore({ maxEntries: 2, now: clock.now });
    for (const key of ['k1', 'k2', 'k3']) assert.equal((await store.claim('client-a', key, 'fp-1')).outcome, 'claimed');

    assert.equal(store.size, 3);
    for (const key of ['k1', 'k2', 'k3']) assert.equal((await store.claim('client-a', key, 'fp-1')).outcome, 'in-flight');

    clock.advance(LOCK_TIMEOUT_MS);
    await store.claim('client-a', 'k4', 'fp-1');
    assert.equal(store.size, 2);
    assert.equal((await store.claim('client-a', 'k4', 'fp-1')).outcome, 'in-flight');
  });

  it('rejects a maxEntries that is not a positive integer', () => {
    assert.throws(() => new MemoryIdempotencyStore({ maxEntries: 0 }), RangeError);
  });

  it('rejects a lock timeout or retention that is not a positive duration', () => {
    assert.throws(() => new MemoryIdempotencyStore({ lockTimeoutMs: 0 }), RangeError);
    assert.throws(() => new MemoryIdempotencyStore({ retentionMs: Number.NaN }), RangeError);
  });
});
