import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MIN_PROOFS_PER_SECOND, PROOF_HEADROOM, ProofPool, proofsNeeded } from './dpop-proofs.js';

describe('DPoP proofs for the bench (one per request, made before the load)', () => {
  it('sizes a pool by the expected throughput with headroom, plus two per connection', () => {
    assert.equal(proofsNeeded(1000, 3, 50), Math.ceil(1000 * 3 * PROOF_HEADROOM) + 100);
    assert.equal(proofsNeeded(10, 2, 5), MIN_PROOFS_PER_SECOND * 2 + 10, 'a slow previous load still gets the floor');
    assert.throws(() => proofsNeeded(0, 3, 50), RangeError);
    assert.throws(() => proofsNeeded(Number.NaN, 3, 50), RangeError);
  });

  it('hands each proof out once, oldest first, and counts the requests that found none left', () => {
    const pool = new ProofPool(['p1', 'p2']);
    assert.deepEqual([pool.take(), pool.take(), pool.take(), pool.take()], ['p1', 'p2', undefined, undefined]);
    assert.equal(pool.size, 2);
    assert.equal(pool.handedOut, 2);
    assert.equal(pool.dry, 2);
  });
});
