import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { failedMeasurements, median, roundByRoundRatio, summarise, summariseSameLoad, type Sample } from './summary.js';

const sample = (overrides: Partial<Sample> = {}): Sample => ({ rps: 1000, cpuMicros: 100, p50: 4, p99: 12, requests: 3000, non200: 0, errors: 0, ...overrides });

describe('bench summary', () => {
  it('reports medians over the rounds with the spread of req/s', () => {
    const row = summarise('B', [sample({ rps: 900, p99: 20, cpuMicros: 120 }), sample({ rps: 1200, p99: 10, cpuMicros: 90 }), sample({ rps: 1000.4, p99: 12, cpuMicros: 101 })]);
    assert.deepEqual(row, { name: 'B', rps: { median: 1000, min: 900, max: 1200 }, p50: 4, p99: 12, cpuMicrosPerRequest: 101, allOk: true });
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.throws(() => median([]), RangeError);
  });

  it('fails the run for a configuration that answered anything but 200 in any round (a 401 storm is not a throughput)', () => {
    const storm = summarise('B', [sample(), sample({ non200: 1 }), sample()]);
    const refused = summarise('C', [sample({ errors: 2 })]);
    const neverRan = summarise('A', [sample({ requests: 0, rps: 0 })]);
    const healthy = summarise('D', [sample()]);
    assert.deepEqual([storm.allOk, refused.allOk, neverRan.allOk, healthy.allOk], [false, false, false, true]);
    assert.deepEqual(failedMeasurements([storm, refused, neverRan, healthy], { allOk: true }), [
      'B answered something other than 200: its numbers are not a throughput',
      'C answered something other than 200: its numbers are not a throughput',
      'A answered something other than 200: its numbers are not a throughput',
    ]);
    assert.deepEqual(failedMeasurements([healthy], { allOk: true }), []);
  });

  it('fails the run when the token endpoint refused requests or its load failed', () => {
    const healthy = summarise('A', [sample()]);
    assert.deepEqual(failedMeasurements([healthy], { allOk: false }), ['the token endpoint answered something other than 200: its tokens/s is not a rate of issued tokens']);
    assert.deepEqual(failedMeasurements([healthy], undefined), ['the token issuance load failed']);
  });

  it('computes ratios round by round, so a round slow for everyone cancels out', () => {
    const a = [sample({ rps: 1000 }), sample({ rps: 500 }), sample({ rps: 1000 })];
    const b = [sample({ rps: 400 }), sample({ rps: 250 }), sample({ rps: 420 })];
    assert.equal(roundByRoundRatio(b, a), 0.42); // per round 0.40, 0.50, 0.42; the ratio of medians would say 0.40
    assert.throws(() => roundByRoundRatio(b, a.slice(1)), RangeError);
  });

  it('compares latency at the same load round by round, and fails the run if either side was refused', () => {
    const side = (p99: number, failed = 0) => ({ p50: p99 / 4, p99, ok: 100, failed });
    const summary = summariseSameLoad(2000, [
      { a: side(2), b: side(3) },
      { a: side(10), b: side(11) }, // a stall for both: the ratio of the round stays near 1
      { a: side(2), b: side(5) },
    ]);
    assert.deepEqual(summary, { rate: 2000, a: { p50: 0.5, p99: 2 }, b: { p50: 1.25, p99: 5 }, p99Ratio: 1.5, allOk: true });
    const refused = summariseSameLoad(2000, [{ a: side(2), b: side(3, 1) }]);
    assert.equal(refused.allOk, false);
    assert.deepEqual(failedMeasurements([], { allOk: true }, refused), ['A or B answered something other than 200 at the same load: those latencies are not of served requests']);
  });
});
