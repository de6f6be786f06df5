import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULT_PLANS_PATH, PlansError, loadPlansFile, parsePlans } from './plans.js';

const VALID = {
  plans: {
    standard: { burst: 30, refillPerSecond: 10, dailyQuota: 100_000 },
    free: { burst: 6, refillPerSecond: 2, dailyQuota: 1000 },
  },
  defaultPlan: 'free',
};

/** VALID with one field of the free plan replaced (undefined removes it). */
function withFreeField(field: string, value: unknown): unknown {
  return { ...VALID, plans: { ...VALID.plans, free: { ...VALID.plans.free, [field]: value } } };
}

function assertPlansError(json: unknown, pattern: RegExp): void {
  assert.throws(() => parsePlans(json, 'plans.json'), (error: unknown) => {
    assert.ok(error instanceof PlansError);
    assert.match(error.message, pattern);
    assert.doesNotMatch(error.message, /\n/, 'one line');
    return true;
  });
}

describe('plans', () => {
  it('loads the committed plans.json', async () => {
    const table = await loadPlansFile(DEFAULT_PLANS_PATH);
    assert.deepEqual(table.plans.get('standard'), { name: 'standard', burst: 30, refillPerSecond: 10, dailyQuota: 100_000 });
    assert.deepEqual(table.plans.get('free'), { name: 'free', burst: 6, refillPerSecond: 2, dailyQuota: 1000 });
    assert.deepEqual([...table.plans.keys()].sort(), ['free', 'standard'], '$comment is not a plan');
    assert.equal(table.defaultPlan.name, 'free');
  });

  it('gives the default plan to a missing or unknown plan name', () => {
    const table = parsePlans(VALID, 'plans.json');
    assert.equal(table.resolve('standard').name, 'standard');
    assert.equal(table.resolve('enterprise').name, 'free');
    assert.equal(table.resolve('__proto__').name, 'free');
    assert.equal(table.resolve(undefined).name, 'free');
  });

  for (const [why, json, pattern] of [
    ['a burst of 0', withFreeField('burst', 0), /plan "free": burst must be an integer >= 1, got 0/],
    ['a fractional burst', withFreeField('burst', 1.5), /plan "free": burst must be an integer >= 1/],
    ['a burst too large for a header', withFreeField('burst', 1e16), /plan "free": burst must be at most 999999999999999, got 10000000000000000/],
    ['a missing burst', withFreeField('burst', undefined), /plan "free": burst must be an integer >= 1, got nothing/],
    ['a negative refill rate', withFreeField('refillPerSecond', -1), /plan "free": refillPerSecond must be a positive finite number, got -1/],
    ['a refill rate of 0', withFreeField('refillPerSecond', 0), /plan "free": refillPerSecond/],
    ['a refill rate given as a string', withFreeField('refillPerSecond', '2'), /plan "free": refillPerSecond .* got "2"/],
    ['a refill rate too small to be a window', withFreeField('refillPerSecond', 1e-300), /plan "free": refillPerSecond 1e-300 is too small/],
    ['a daily quota of 0', withFreeField('dailyQuota', 0), /plan "free": dailyQuota must be an integer >= 1/],
    ['a misspelt field', withFreeField('dailyQuotas', 5), /plan "free": unknown field "dailyQuotas"/],
    ['a plan that is not an object', { ...VALID, plans: { ...VALID.plans, free: 6 } }, /plan "free": must be an object/],
    ['an unknown default plan', { ...VALID, defaultPlan: 'gold' }, /defaultPlan must name one of the plans \(standard, free\), got "gold"/],
    ['a missing default plan', { plans: VALID.plans }, /defaultPlan .* got nothing/],
    ['no plans at all', { plans: {}, defaultPlan: 'free' }, /at least one plan/],
    ['no plans object', [], /^plans\.json: expected/],
  ] as const) {
    it(`rejects ${why}, naming the field`, () => assertPlansError(json, pattern));
  }

  it('names the file it cannot read or parse', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'plans-'));
    try {
      await assert.rejects(loadPlansFile(join(dir, 'missing.json')), (error: unknown) => {
        assert.ok(error instanceof PlansError);
        assert.match(error.message, /missing\.json: cannot read the plans file \(ENOENT\)/);
        return true;
      });
      const broken = join(dir, 'broken.json');
      await writeFile(broken, '{"plans": ');
      await assert.rejects(loadPlansFile(broken), /broken\.json: not valid JSON/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
