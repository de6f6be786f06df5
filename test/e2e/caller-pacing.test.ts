import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { PredictorClient, RetryBudget, TokenSource, type AttemptEvent, type IrisRow } from 'caller';
import { startFaultProxy } from '../src/harness/fault-proxy.js';
import { stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { metric } from '../src/harness/probes.js';
import { DEV_ENV, startAuthServer, startPredictor, type RunningAuthServer, type RunningPredictor } from '../src/harness/system.js';

/**
 * The plans of predictor/plans.json in the same shape (burst = 3 s of the sustained rate) with
 * larger rates, so that 1 000 calls take seconds rather than minutes (standard 10/s, free 2/s);
 * the free burst stays below the concurrency of 100, as with the real plan.
 */
const PACED_PLANS = {
  plans: { standard: { burst: 300, refillPerSecond: 100, dailyQuota: 1_000_000 }, free: { burst: 90, refillPerSecond: 30, dailyQuota: 1_000_000 } },
  defaultPlan: 'free',
};
/** For the lossy run: limits that never refuse, so that only the network fails. */
const OPEN_PLANS = { plans: { standard: { burst: 1e9, refillPerSecond: 1e9, dailyQuota: 1e12 } }, defaultPlan: 'standard' };

const rowOf = (index: number): IrisRow => [4 + (index % 40) / 10, 3, 1 + (index % 50) / 10, 0.2 + (index % 20) / 10];
const executions = (predictor: RunningPredictor) => metric(predictor, /^predictor_model_executions_total (\d+)/m);

/** `lines` logical predictions, at most `concurrency` in flight, as `caller batch` runs them. */
async function runLines(client: PredictorClient, lines: number, concurrency: number, keyOf?: (index: number) => string) {
  const outcome = { ok: 0, failed: [] as string[] };
  let next = 0;
  const worker = async () => {
    for (let index = next++; index < lines; index = next++) {
      try {
        await client.predict([rowOf(index)], keyOf ? { idempotencyKey: keyOf(index) } : {});
        outcome.ok += 1;
      } catch (error) {
        outcome.failed.push((error as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return outcome;
}

describe('caller pacing and retry budget against the real predictor', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;

  before(async () => {
    dataDir = await temporaryDirectory('caller-pacing');
    await writeFile(`${dataDir.path}/paced-plans.json`, JSON.stringify(PACED_PLANS));
    await writeFile(`${dataDir.path}/open-plans.json`, JSON.stringify(OPEN_PLANS));
    auth = await startAuthServer({ dataDir: `${dataDir.path}/auth` });
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  describe('pacing from the rate-limit fields', () => {
    let predictor: RunningPredictor;
    before(async () => {
      predictor = await startPredictor({ issuer: auth.issuer, dataDir: `${dataDir.path}/paced`, env: { PLANS_FILE: `${dataDir.path}/paced-plans.json` } });
    });

    for (const { plan, clientId, secret, concurrency } of [
      { plan: 'standard', clientId: 'demo-caller', secret: 'DEMO_CALLER_SECRET', concurrency: 20 },
      { plan: 'free', clientId: 'demo-free', secret: 'DEMO_FREE_SECRET', concurrency: 100 },
    ] as const) {
      it(`1 000 predictions at concurrency ${concurrency} on the ${plan} plan: no failure, at most 2% of attempts answered 429`, async (t) => {
        const events: AttemptEvent[] = [];
        const tokens = new TokenSource({ issuer: auth.issuer, clientId, clientSecret: () => DEV_ENV[secret]!, scope: 'predict' });
        const client = new PredictorClient({ baseUrl: predictor.url, tokens, maxAttempts: 10, onAttempt: (event) => events.push(event) });
        const limited0 = await metric(predictor, new RegExp(`^predictor_rate_limited_total\\{policy="burst",plan="${plan}"\\} (\\d+)`, 'm'));
        const started = performance.now();
        const outcome = await runLines(client, 1_000, concurrency);
        const seconds = (performance.now() - started) / 1000;

        assert.deepEqual(outcome.failed, []);
        assert.equal(outcome.ok, 1_000);
        const refused = events.filter((event) => event.status === 429).length;
        assert.ok(refused <= 0.02 * events.length, `${refused} of ${events.length} attempts answered 429`);
        const limited = (await metric(predictor, new RegExp(`^predictor_rate_limited_total\\{policy="burst",plan="${plan}"\\} (\\d+)`, 'm'))) - limited0;
        assert.equal(limited, refused, 'the client saw every 429 the predictor sent');
        // Reported, not asserted (timing belongs to `npm run bench`): the rate after the burst against the plan's.
        const { burst, refillPerSecond } = PACED_PLANS.plans[plan];
        t.diagnostic(`${plan}: ${events.length} attempts, ${refused} answered 429, ${seconds.toFixed(1)} s, ${((1_000 - burst) / seconds).toFixed(1)} req/s after the burst (plan ${refillPerSecond}/s)`);
      });
    }
  });

  describe('retry budget on a lossy network', () => {
    let predictor: RunningPredictor;
    before(async () => {
      predictor = await startPredictor({ issuer: auth.issuer, dataDir: `${dataDir.path}/lossy`, env: { PLANS_FILE: `${dataDir.path}/open-plans.json` } });
    });

    it('2 000 keyed lines at concurrency 20 through a proxy that drops every 5th answer and resets every 19th connection: none fails, each executes once', async (t) => {
      const proxy = await startFaultProxy({ target: predictor.url, dropResponseEvery: 5, resetEvery: 19 });
      try {
        const tokens = new TokenSource({ issuer: auth.issuer, clientId: 'demo-caller', clientSecret: () => DEV_ENV['DEMO_CALLER_SECRET']!, scope: 'predict' });
        // The default budget (the AWS standard quota), made here only to watch its level.
        const budget = new RetryBudget();
        let lowest = budget.available;
        let attempts = 0;
        const client = new PredictorClient({
          baseUrl: proxy.url,
          tokens,
          retryBudget: budget,
          maxAttempts: 10,
          onAttempt: () => {
            attempts += 1;
            lowest = Math.min(lowest, budget.available);
          },
        });
        const executions0 = await executions(predictor);
        const run = `lossy-${Date.now().toString(36)}`;
        const outcome = await runLines(client, 2_000, 20, (index) => `${run}-${index}`);

        assert.deepEqual(outcome.failed, []);
        assert.equal(outcome.ok, 2_000);
        assert.ok(proxy.counts.dropped + proxy.counts.reset >= 0.2 * 2_000, `the proxy lost ${proxy.counts.dropped} answers and reset ${proxy.counts.reset} connections`);
        // 2 000 distinct keys each answered 200 (so executed at least once), and 2 000 executions: each exactly once.
        assert.equal((await executions(predictor)) - executions0, 2_000);
        t.diagnostic(`${attempts} attempts, ${proxy.counts.dropped} answers dropped, ${proxy.counts.reset} connections reset; the budget went down to ${lowest} of 500`);
      } finally {
        await proxy.close();
      }
    });
  });
});
