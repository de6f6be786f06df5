import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newPredictionId } from './prediction-id.js';

describe('newPredictionId', () => {
  it('is pred_ and a UUIDv7 carrying the time in ms', () => {
    const now = Date.UTC(2026, 10, 28, 12, 0, 0, 123);
    const id = newPredictionId(now);
    assert.match(id, /^pred_[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(Number.parseInt(id.slice(5, 18).replace('-', ''), 16), now);
  });

  it('refuses a time that is not a whole number of ms in 48 bits', () => {
    for (const now of [-1, 1.5, 2 ** 48, Number.NaN]) assert.throws(() => newPredictionId(now), RangeError, String(now));
  });

  it('sorts by time across milliseconds, and never repeats', () => {
    const ids = Array.from({ length: 10_000 }, (_, index) => newPredictionId(1_700_000_000_000 + Math.floor(index / 100)));
    assert.equal(new Set(ids).size, ids.length);
    for (let index = 100; index < ids.length; index += 100) assert.ok(ids[index - 1]! < ids[index]!, `${ids[index - 1]} < ${ids[index]}`);
  });
});
