import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeUsageEvent, encodeUsageEvent, MalformedUsageEvent, usageDay, usageSubject, type UsageEvent } from './usage-event.js';

const EVENT: UsageEvent = {
  id: 'pred_0b5c',
  type: 'prediction.executed',
  clientId: 'demo-caller',
  plan: 'standard',
  credential: { method: 'bearer-jwt', id: '2026-11-28-abcd' },
  rows: 3,
  modelId: 'iris-softmax@1',
  idempotencyKey: 'key-1',
  occurredAt: '2026-11-28T23:59:59.999Z',
};

describe('usage events', () => {
  it('round-trips through its encoding', () => {
    assert.deepEqual(decodeUsageEvent(encodeUsageEvent(EVENT)), EVENT);
    assert.deepEqual(decodeUsageEvent(new TextEncoder().encode(encodeUsageEvent(EVENT))), EVENT);
    const withoutKey = { ...EVENT, idempotencyKey: undefined };
    assert.deepEqual(decodeUsageEvent(encodeUsageEvent(withoutKey)), withoutKey);
  });

  it('refuses what is not an event, naming the field', () => {
    assert.throws(() => decodeUsageEvent('{'), MalformedUsageEvent);
    assert.throws(() => decodeUsageEvent('[]'), MalformedUsageEvent);
    assert.throws(() => decodeUsageEvent(JSON.stringify({ ...EVENT, rows: 0 })), /"rows"/);
    assert.throws(() => decodeUsageEvent(JSON.stringify({ ...EVENT, type: 'other' })), /"type"/);
    assert.throws(() => decodeUsageEvent(JSON.stringify({ ...EVENT, occurredAt: 'yesterday' })), /"occurredAt"/);
  });

  it('counts for the UTC day it happened', () => {
    assert.equal(usageDay(EVENT), '2026-11-28');
  });

  it('gives each client one subject token, escaping what NATS reserves', () => {
    assert.equal(usageSubject('demo-caller'), 'usage.predictions.demo-caller');
    assert.equal(usageSubject('a.b'), 'usage.predictions.a~2eb');
    assert.equal(usageSubject('a*>'), 'usage.predictions.a~2a~3e');
    assert.notEqual(usageSubject('a.b'), usageSubject('a~2eb'));
  });
});
