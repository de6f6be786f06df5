import { createLogger } from '@m2m/common';
import type { PredictorDeps } from '../app.js';
import { createMetrics } from '../http/metrics.js';
import { MemoryIdempotencyStore } from '../idempotency/memory.js';
import { MemoryRateLimiter } from '../limits/memory.js';
import { parsePlans } from '../limits/plans.js';
import { loadIrisModel } from '../model/index.js';

/** Plans for tests: `standard` roomy enough never to refuse, `free` small enough to hit. */
export const TEST_PLANS = parsePlans(
  {
    plans: {
      standard: { burst: 1_000, refillPerSecond: 1_000, dailyQuota: 1_000_000 },
      free: { burst: 6, refillPerSecond: 2, dailyQuota: 1_000 },
    },
    defaultPlan: 'free',
  },
  'test plans',
);

/** Complete dependencies for `buildApp`, in memory and silent; override what a test is about. */
export function testDeps(overrides: Partial<PredictorDeps> & Pick<PredictorDeps, 'verifyToken'>): PredictorDeps {
  return {
    model: loadIrisModel(),
    readiness: async () => ({}),
    plans: TEST_PLANS,
    limiter: new MemoryRateLimiter(),
    idempotencyStore: new MemoryIdempotencyStore(),
    logger: createLogger('predictor', 'silent'),
    metrics: createMetrics({ collectProcessMetrics: false }),
    bodyLimitBytes: 1024,
    ...overrides,
  };
}
