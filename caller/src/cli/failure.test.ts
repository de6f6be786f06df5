import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PredictorUnreachableError, QuotaExhaustedError, RetryBudgetExhaustedError } from '../client/errors.js';
import { ExitCode } from './exit-codes.js';
import { describeFailure } from './failure.js';

const SUMMARY = { attempts: 1, totalWaitMs: 0, lastStatus: undefined };

describe('describeFailure', () => {
  it('gives a call the retry budget stopped its own exit code and message, never "unreachable"', () => {
    const { code, message } = describeFailure(new RetryBudgetExhaustedError('no answer, other side closed', SUMMARY));
    assert.equal(code, ExitCode.retryBudgetExhausted);
    assert.match(message, /^retry budget exhausted: /);
    assert.doesNotMatch(message, /unreachable/);
  });

  it('gives a spent quota exit code 9 and the time it resets', () => {
    const { code, message } = describeFailure(new QuotaExhaustedError(new Date(Date.UTC(2026, 10, 24)), { ...SUMMARY, attempts: 0 }));
    assert.equal(code, ExitCode.quotaExhausted);
    assert.match(message, /2026-11-24T00:00:00\.000Z/);
  });

  it('still reports a predictor that never answered as unreachable', () => {
    assert.equal(describeFailure(new PredictorUnreachableError('predictor unreachable at http://x: ECONNREFUSED', 'attempts-exhausted', SUMMARY)).code, ExitCode.unreachable);
  });
});
