import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryIdempotencyStore } from './memory.js';
import { claimAndComplete, describeIdempotencyStoreContract, LEASE_MS, ManualClock, RESPONSE } from './store-contract.js';

describeIdempotencyStoreContract('MemoryIdempotencyStore', (options) => new MemoryIdempotencyStore(options));

describe('MemoryIdempotencyStore bounds', () => {
  const completed = (store: MemoryIdempotencyStore, key: string) => claimAndComplete(store, 'client-a', key, 'fp-1', RESPONSE);

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

  it('never evicts a claim whose lease still runs, and evicts it once abandoned', async () => {
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore({ maxEntries: 2, now: clock.now });
    for (const key of ['k1', 'k2', 'k3']) assert.equal((await store.claim('client-a', key, 'fp-1')).outcome, 'claimed');

    assert.equal(store.size, 3);
    for (const key of ['k1', 'k2', 'k3']) assert.equal((await store.claim('client-a', key, 'fp-1')).outcome, 'in-flight');

    clock.advance(LEASE_MS);
    await store.claim('client-a', 'k4', 'fp-1');
    assert.equal(store.size, 2);
    assert.equal((await store.claim('client-a', 'k4', 'fp-1')).outcome, 'in-flight');
  });

  it('rejects a maxEntries that is not a positive integer', () => {
    assert.throws(() => new MemoryIdempotencyStore({ maxEntries: 0 }), RangeError);
  });

  it('rejects a lease or retention that is not a positive duration', () => {
    assert.throws(() => new MemoryIdempotencyStore({ leaseMs: 0 }), RangeError);
    assert.throws(() => new MemoryIdempotencyStore({ retentionMs: Number.NaN }), RangeError);
  });
});

describe('MemoryIdempotencyStore lookup', () => {
  it('tells what a claim would meet without claiming', async () => {
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore({ now: clock.now });
    assert.equal(store.lookup('client-a', 'k1', 'fp-1'), undefined);
    await claimAndComplete(store, 'client-a', 'k1', 'fp-1', RESPONSE);
    assert.deepEqual(store.lookup('client-a', 'k1', 'fp-1'), { outcome: 'replay', response: RESPONSE });
    assert.deepEqual(store.lookup('client-a', 'k1', 'fp-2'), { outcome: 'mismatch' });
    await store.claim('client-a', 'k2', 'fp-1');
    assert.deepEqual(store.lookup('client-a', 'k2', 'fp-1'), { outcome: 'in-flight', retryAfterSeconds: 5 });
    clock.advance(LEASE_MS);
    assert.equal(store.lookup('client-a', 'k2', 'fp-1'), undefined, 'a lease that ran out leaves the key free');
    assert.equal((await store.claim('client-a', 'k3', 'fp-1')).outcome, 'claimed');
  });
});
