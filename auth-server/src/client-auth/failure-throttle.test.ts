import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ClientAuthThrottle, type Admission } from './failure-throttle.js';

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

function settled(admission: Admission, outcome: 'success' | 'failure' | 'other'): void {
  assert.ok(admission.admitted, 'admitted');
  admission.settle(outcome);
}

describe('ClientAuthThrottle', () => {
  it('lets a client fail CLIENT_FREE_FAILURES times, then delays it 1 s, 2 s, 4 s… capped at the max delay', () => {
    const time = clock();
    const throttle = new ClientAuthThrottle({ clientFreeFailures: 3, clientBaseDelayMs: 1_000, clientMaxDelayMs: 4_000, addressBurst: 0 }, time.now);
    for (let i = 0; i < 3; i += 1) settled(throttle.admit('svc', '10.0.0.1'), 'failure');
    assert.equal(throttle.admit('svc', '10.0.0.1').admitted, true, 'no delay yet');

    const delays: number[] = [];
    for (let i = 0; i < 5; i += 1) {
      settled(throttle.admit('svc', '10.0.0.1'), 'failure');
      const refused = throttle.admit('svc', '10.0.0.2');
      assert.equal(refused.admitted, false);
      if (refused.admitted) return;
      assert.equal(refused.limit, 'client');
      delays.push(refused.retryAfterMs);
      time.advance(refused.retryAfterMs - 1);
      assert.equal(throttle.admit('svc', '10.0.0.2').admitted, false, 'still delayed 1 ms before the end');
      time.advance(1);
    }
    assert.deepEqual(delays, [1_000, 2_000, 4_000, 4_000, 4_000]);
    assert.equal(throttle.admit('other', '10.0.0.1').admitted, true, 'another client is not affected');
  });

  it('never delays an address that authenticated as the client recently, and a success ends the delay', () => {
    const time = clock();
    const throttle = new ClientAuthThrottle({ clientFreeFailures: 1, clientMaxDelayMs: 30_000, trustedAddressMs: 60_000, addressBurst: 0 }, time.now);
    settled(throttle.admit('svc', '10.0.0.1'), 'success');
    for (let i = 0; i < 10; i += 1) {
      const attempt = throttle.admit('svc', '203.0.113.9');
      if (attempt.admitted) attempt.settle('failure');
      else time.advance(attempt.retryAfterMs);
    }
    const fromNewAddress = throttle.admit('svc', '10.0.0.7');
    assert.equal(fromNewAddress.admitted, false, 'a new address waits');
    assert.ok(!fromNewAddress.admitted && fromNewAddress.retryAfterMs <= 30_000, 'at most the max delay');
    const fromUsualAddress = throttle.admit('svc', '10.0.0.1');
    assert.equal(fromUsualAddress.admitted, true, 'the usual address is let through');
    settled(fromUsualAddress, 'success');
    assert.equal(throttle.admit('svc', '10.0.0.7').admitted, true, 'the success ended the delay');

    time.advance(60_000);
    settled(throttle.admit('svc', '203.0.113.9'), 'failure');
    settled(throttle.admit('svc', '203.0.113.9'), 'failure');
    assert.equal(throttle.admit('svc', '10.0.0.1').admitted, false, 'trust expires after trustedAddressMs');
  });

  it('counts only failures: successes and other answers never throttle', () => {
    const time = clock();
    const throttle = new ClientAuthThrottle({ clientFreeFailures: 1, addressBurst: 2 }, time.now);
    for (let i = 0; i < 1_000; i += 1) settled(throttle.admit('svc', '10.0.0.1'), i % 2 ? 'success' : 'other');
    assert.equal(throttle.admit('svc', '10.0.0.1').admitted, true);
  });

  it('gives a source address a bucket of failures refilled over time, whatever clients it names', () => {
    const time = clock();
    const throttle = new ClientAuthThrottle({ addressBurst: 3, addressRefillMs: 6_000, clientFreeFailures: 100 }, time.now);
    for (let i = 0; i < 3; i += 1) settled(throttle.admit(`guess-${i}`, '198.51.100.1'), 'failure');
    const refused = throttle.admit('guess-3', '198.51.100.1');
    assert.deepEqual(refused, { admitted: false, limit: 'address', retryAfterMs: 6_000 });
    assert.equal(throttle.admit(undefined, '198.51.100.1').admitted, false, 'even without a client id');
    assert.equal(throttle.admit('guess-3', '198.51.100.2').admitted, true, 'other addresses are not affected');
    time.advance(6_000);
    settled(throttle.admit('guess-4', '198.51.100.1'), 'failure');
    assert.equal(throttle.admit('guess-5', '198.51.100.1').admitted, false, 'one failure earned back, one spent');
  });

  it('counts concurrent failures admitted together: the address goes into debt and waits it off', () => {
    const time = clock();
    const throttle = new ClientAuthThrottle({ addressBurst: 2, addressRefillMs: 1_000, clientFreeFailures: 100 }, time.now);
    const inFlight = Array.from({ length: 10 }, (_, i) => throttle.admit(`c${i}`, '198.51.100.1'));
    assert.ok(inFlight.every((admission) => admission.admitted), 'nothing had failed yet');
    for (const admission of inFlight) settled(admission, 'failure');
    const refused = throttle.admit('c', '198.51.100.1');
    assert.deepEqual(refused, { admitted: false, limit: 'address', retryAfterMs: 3_000 }, 'debt capped at -burst: 3 refills to one failure');
  });

  it('forgets a failure streak after forgetMs without failures', () => {
    const time = clock();
    const throttle = new ClientAuthThrottle({ clientFreeFailures: 2, forgetMs: 10_000, addressBurst: 0 }, time.now);
    settled(throttle.admit('svc', '10.0.0.1'), 'failure');
    settled(throttle.admit('svc', '10.0.0.1'), 'failure');
    time.advance(10_001);
    settled(throttle.admit('svc', '10.0.0.1'), 'failure');
    assert.equal(throttle.admit('svc', '10.0.0.1').admitted, true, 'the streak restarted at 1');
  });

  it('tracks a bounded number of client ids and addresses', () => {
    const time = clock();
    const throttle = new ClientAuthThrottle({ maxTracked: 100, clientFreeFailures: 1, addressBurst: 1 }, time.now);
    for (let i = 0; i < 10_000; i += 1) {
      const admission = throttle.admit(`random-${i}`, `192.0.2.${i % 250}/${i}`);
      if (admission.admitted) admission.settle('failure');
    }
    assert.deepEqual(throttle.tracked, { clients: 100, addresses: 100 });
    // The newest client is still tracked (delayed after its second failure), the oldest forgotten.
    settled(throttle.admit('random-9999', 'fresh'), 'failure');
    assert.equal(throttle.admit('random-9999', 'fresh-2').admitted, false);
    assert.equal(throttle.admit('random-0', 'fresh-3').admitted, true);
  });
});
