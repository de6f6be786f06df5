import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { sendJson, startStubIssuer, startStubServer } from '../testing/stub-server.js';
import { TokenSource } from '../tokens/token-source.js';
import type { AccessToken } from '../tokens/token-source.js';
import { systemClock } from '../retry/clock.js';
import { RetryBudget } from '../retry/retry-budget.js';
import { ManualClock } from '../testing/manual-clock.js';
import { seededRandom } from '../testing/seeded-random.js';
import { PredictorApiError, PredictorCallError, PredictorUnreachableError, QuotaExhaustedError, RetriesExhaustedError, RetryAfterTooLongError, RetryBudgetExhaustedError } from './errors.js';
import { PredictorClient, type AttemptEvent } from './predictor-client.js';

const stubs: { close: () => Promise<void> }[] = [];
after(() => Promise.all(stubs.map((stub) => stub.close())));

/** Tokens tok-1, tok-2, …: a new one after each invalidation. */
function fakeTokens() {
  let generation = 1;
  let current: AccessToken = { value: 'tok-1', cacheKey: 'k', scope: 'predict', requestedAt: 0, expiresAt: Infinity, refreshAt: Infinity };
  return {
    invalidations: 0,
    async getToken() {
      return current;
    },
    invalidate(token: AccessToken) {
      if (token !== current) return;
      this.invalidations += 1;
      generation += 1;
      current = { ...current, value: `tok-${generation}` };
    },
  };
}

async function predictor(answer: (authorization: string, attempt: number) => [number, unknown, Record<string, string>?]) {
  let attempt = 0;
  const stub = await startStubServer((request, _body, response) => {
    attempt += 1;
    const [status, body, headers] = answer(request.headers.authorization ?? '', attempt);
    sendJson(response, status, body, headers);
  });
  stubs.push(stub);
  return stub;
}

const OK = { id: 'pred_1', model: 'iris-softmax-v1', created: 0, predictions: [] };
const INVALID_TOKEN = { 'www-authenticate': 'Bearer realm="predictor", error="invalid_token"' };

describe('PredictorClient', () => {
  it('sends the bearer token and one Idempotency-Key per logical prediction', async () => {
    const stub = await predictor(() => [200, OK]);
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens() });
    await client.predict([[1, 2, 3, 4]]);
    await client.predict([[1, 2, 3, 4]], { idempotencyKey: 'mine' });
    const [first, second] = stub.requests;
    assert.equal(first?.headers.authorization, 'Bearer tok-1');
    assert.match(String(first?.headers['idempotency-key']), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(second?.headers['idempotency-key'], 'mine');
    assert.deepEqual(JSON.parse(first?.body ?? ''), { inputs: [[1, 2, 3, 4]] });
  });

  it('on 401 refreshes the token once and replays with the same Idempotency-Key', async () => {
    const stub = await predictor((authorization) => (authorization === 'Bearer tok-1' ? [401, { status: 401 }, INVALID_TOKEN] : [200, OK]));
    const tokens = fakeTokens();
    const client = new PredictorClient({ baseUrl: stub.url, tokens });
    assert.deepEqual(await client.predict([[1, 2, 3, 4]]), OK);
    assert.equal(tokens.invalidations, 1);
    assert.equal(stub.requests.length, 2);
    assert.equal(stub.requests[0]?.headers['idempotency-key'], stub.requests[1]?.headers['idempotency-key']);
  });

  it('treats a second 401 as final', async () => {
    const stub = await predictor(() => [401, { status: 401, detail: 'expired' }, INVALID_TOKEN]);
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens() });
    await assert.rejects(client.predict([[1, 2, 3, 4]]), (error: unknown) => error instanceof PredictorApiError && error.status === 401 && error.attempts === 2 && error.authError === 'invalid_token');
    assert.equal(stub.requests.length, 2);
  });

  it('stops at once on 403 with the insufficient_scope reason', async () => {
    const stub = await predictor(() => [403, { status: 403, detail: 'needs predict' }, { 'www-authenticate': 'Bearer realm="predictor", error="insufficient_scope", scope="predict"' }]);
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens() });
    await assert.rejects(client.predict([[1, 2, 3, 4]]), (error: unknown) => error instanceof PredictorApiError && error.status === 403 && error.authError === 'insufficient_scope');
    assert.equal(stub.requests.length, 1);
  });
});

describe('PredictorClient retries', () => {
  const ROWS: [number, number, number, number][] = [[1, 2, 3, 4]];

  it('succeeds on attempt 3 after two 429s with Retry-After: 2, waiting at least 2 s each time, with one Idempotency-Key', async () => {
    const stub = await predictor((_authorization, attempt) => (attempt <= 2 ? [429, { status: 429 }, { 'retry-after': '2' }] : [200, OK]));
    const clock = new ManualClock();
    const events: AttemptEvent[] = [];
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock, random: () => 0.5, onAttempt: (event) => events.push(event) });
    assert.deepEqual(await client.predict(ROWS), OK);
    assert.equal(stub.requests.length, 3);
    assert.deepEqual(clock.sleeps, [2_000, 2_000]);
    assert.equal(new Set(stub.requests.map((request) => request.headers['idempotency-key'])).size, 1);
    assert.deepEqual(
      events.map(({ attempt, status, next, waitMs, reason }) => ({ attempt, status, next, waitMs, reason })),
      [
        { attempt: 1, status: 429, next: 'retry', waitMs: 2_000, reason: 'retry-after' },
        { attempt: 2, status: 429, next: 'retry', waitMs: 2_000, reason: 'retry-after' },
        { attempt: 3, status: 200, next: 'done', waitMs: 0, reason: 'success' },
      ],
    );
  });

  it('retries 409, 502, 503, 504 with the same key and full-jitter backoff when there is no Retry-After', async () => {
    const statuses = [409, 502, 503, 504];
    const stub = await predictor((_authorization, attempt) => (attempt <= statuses.length ? [statuses[attempt - 1]!, {}] : [200, OK]));
    const clock = new ManualClock();
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock, random: () => 0.5, backoff: { baseDelayMs: 100 } });
    await client.predict(ROWS);
    assert.deepEqual(clock.sleeps, [50, 100, 200, 400]);
    assert.equal(new Set(stub.requests.map((request) => request.headers['idempotency-key'])).size, 1);
  });

  for (const status of [400, 403, 413, 415, 422]) {
    it(`never retries ${status}`, async () => {
      const stub = await predictor(() => [status, { status, detail: 'no' }]);
      const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock: new ManualClock() });
      await assert.rejects(client.predict(ROWS), (error: unknown) => error instanceof PredictorApiError && error.reason === 'not-retryable' && error.attempts === 1);
      assert.equal(stub.requests.length, 1);
    });
  }

  it('stops after 5 attempts, each wait at most 30 s, with an error that says attempts, total wait, last status and why', async () => {
    const stub = await predictor(() => [503, { status: 503 }]);
    const clock = new ManualClock();
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock, random: () => 0.999999, backoff: { baseDelayMs: 10_000 } });
    await assert.rejects(client.predict(ROWS), (error: unknown) => {
      assert.ok(error instanceof RetriesExhaustedError);
      assert.equal(error.attempts, 5);
      assert.equal(error.lastStatus, 503);
      assert.equal(error.reason, 'attempts-exhausted');
      assert.equal(error.totalWaitMs, clock.sleeps.reduce((sum, wait) => sum + wait, 0));
      assert.match(error.message, /5 attempts, waited \d+ ms, last status 503, stopped: attempts-exhausted/);
      return true;
    });
    assert.equal(stub.requests.length, 5);
    assert.equal(clock.sleeps.length, 4);
    assert.ok(clock.sleeps.every((wait) => wait <= 30_000), `waits ${clock.sleeps}`);
  });

  it('stops at once with retryAt when Retry-After exceeds the cap', async () => {
    const stub = await predictor(() => [429, { status: 429 }, { 'retry-after': '3600' }]);
    const clock = new ManualClock();
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock });
    await assert.rejects(client.predict(ROWS), (error: unknown) => {
      assert.ok(error instanceof RetryAfterTooLongError);
      assert.equal(error.retryAt.getTime(), clock.wallNow() + 3_600_000);
      assert.equal(error.attempts, 1);
      return true;
    });
    assert.equal(stub.requests.length, 1);
    assert.deepEqual(clock.sleeps, []);
  });

  it('stops at once when Retry-After goes past the deadline', async () => {
    const stub = await predictor(() => [503, {}, { 'retry-after': '5' }]);
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock: new ManualClock() });
    await assert.rejects(client.predict(ROWS, { deadlineMs: 3_000 }), RetryAfterTooLongError);
    assert.equal(stub.requests.length, 1);
  });

  it('cancels a wait at once when the caller aborts', { timeout: 10_000 }, async () => {
    const stub = await predictor(() => [503, {}, { 'retry-after': '25' }]);
    const controller = new AbortController();
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock: systemClock, onAttempt: (event) => event.next === 'retry' && controller.abort(new Error('user gave up')) });
    await assert.rejects(client.predict(ROWS, { signal: controller.signal }), (error: unknown) => error instanceof PredictorCallError && error.reason === 'aborted');
  });

  it('retries connection failures and reports the predictor unreachable', async () => {
    const stub = await predictor(() => [200, OK]);
    await stub.close();
    const clock = new ManualClock();
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock, random: () => 0 });
    await assert.rejects(client.predict(ROWS), (error: unknown) => error instanceof PredictorUnreachableError && error.attempts === 5 && error.lastStatus === undefined);
  });

  it('shares a retry budget: 100 concurrent calls against a server that always answers 503 make at most 100 + 500 / 5 requests', async () => {
    const stub = await predictor(() => [503, {}, { 'retry-after': '1' }]);
    const budget = new RetryBudget();
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock: new ManualClock(), retryBudget: budget, maxAttempts: 1_000 });
    const results = await Promise.allSettled(Array.from({ length: 100 }, () => client.predict(ROWS)));
    assert.ok(results.every((result) => result.status === 'rejected'));
    const reasons = results.map((result) => (result as PromiseRejectedResult).reason as PredictorCallError);
    assert.ok(reasons.every((error) => error instanceof RetryBudgetExhaustedError && error.reason === 'budget-exhausted'), 'every call ends on the budget');
    assert.equal(stub.requests.length, 100 + 500 / 5);
    assert.equal(budget.available, 0);
  });

  it('charges 10 for a retry after no answer: 20 calls against a closed port make at most 20 + 500 / 10 attempts', async () => {
    const stub = await predictor(() => [200, OK]);
    await stub.close();
    const events: AttemptEvent[] = [];
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock: new ManualClock(), random: () => 0, maxAttempts: 10, onAttempt: (event) => events.push(event) });
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => client.predict(ROWS)));
    const reasons = results.map((result) => (result as PromiseRejectedResult).reason as PredictorCallError);
    assert.ok(reasons.every((error) => error instanceof RetryBudgetExhaustedError), 'every call ends on the budget, none as unreachable');
    assert.match(reasons[0]!.message, /^retry budget exhausted: .*last attempt: no answer/);
    assert.equal(events.length, 20 + 500 / 10);
  });

  it('carries 20% lost answers through 1 000 calls at concurrency 20: the budget never runs low', async () => {
    let answer = 0;
    // A fifth of the answers lost (the connection closes with no response), drawn from a seeded generator.
    const lose = seededRandom(20);
    const stub = await startStubServer((_request, _body, response) => {
      answer += 1;
      if (lose() < 0.2) return void response.socket?.destroy();
      sendJson(response, 200, OK);
    });
    stubs.push(stub);
    const budget = new RetryBudget();
    let lowest = budget.available;
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock: new ManualClock(), retryBudget: budget, random: () => 0.5, maxAttempts: 10, onAttempt: () => (lowest = Math.min(lowest, budget.available)) });
    let next = 0;
    const worker = async () => {
      while (next++ < 1_000) await client.predict(ROWS);
    };
    await Promise.all(Array.from({ length: 20 }, worker));
    assert.ok(answer >= 1_200, `${answer} requests for 1 000 calls with a fifth of the answers lost`);
    assert.ok(lowest > 250, `the budget went as low as ${lowest} of 500`);
  });
});

describe('PredictorClient pacing from the rate-limit fields', () => {
  const ROWS: [number, number, number, number][] = [[1, 2, 3, 4]];
  const DAILY_SPENT = {
    'ratelimit-policy': '"burst";q=30;w=3, "daily";q=1000;w=86400',
    ratelimit: '"burst";r=29;t=1, "daily";r=0;t=43200',
  };

  for (const [fields, headers] of [
    ['the IETF fields', DAILY_SPENT],
    ['X-RateLimit-* alone', { 'x-ratelimit-limit': '1000', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': '43200' }],
  ] as const) {
    it(`stops the next call at once, sending nothing, when ${fields} say the daily quota is spent`, async () => {
      const stub = await predictor(() => [200, OK, headers]);
      const clock = new ManualClock();
      const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock });
      await client.predict(ROWS);
      await assert.rejects(client.predict(ROWS), (error: unknown) => {
        assert.ok(error instanceof QuotaExhaustedError);
        assert.equal(error.reason, 'quota-exhausted');
        assert.equal(error.resetsAt.getTime(), clock.wallNow() + 43_200_000);
        assert.equal(error.attempts, 0);
        return true;
      });
      assert.equal(stub.requests.length, 1);
    });
  }

  it('turns a 429 for the daily quota into QuotaExhaustedError after one attempt, not a wait', async () => {
    const stub = await predictor(() => [429, { status: 429, violated_policy: 'daily' }, { ...DAILY_SPENT, 'retry-after': '43200' }]);
    const clock = new ManualClock();
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock });
    await assert.rejects(client.predict(ROWS), (error: unknown) => error instanceof QuotaExhaustedError && error.attempts === 1 && error.resetsAt.getTime() === clock.wallNow() + 43_200_000);
    assert.equal(stub.requests.length, 1);
    assert.deepEqual(clock.sleeps, []);
  });

  for (const style of ['ietf', 'x-ratelimit'] as const) {
    it(`keeps 20 concurrent calls inside the server's token bucket (${style} fields): 200 calls, no 429`, async () => {
      const clock = new ManualClock();
      // The predictor's bucket (burst 10, 5 per second) on the test's clock.
      const plan = { burst: 10, refillPerSecond: 5 };
      let tokens = plan.burst;
      let at = clock.now();
      const stub = await predictor(() => {
        tokens = Math.min(plan.burst, tokens + ((clock.now() - at) / 1000) * plan.refillPerSecond);
        at = clock.now();
        const allowed = tokens >= 1;
        if (allowed) tokens -= 1;
        const [remaining, reset] = [Math.floor(tokens), Math.ceil((plan.burst - tokens) / plan.refillPerSecond)];
        const headers: Record<string, string> =
          style === 'ietf'
            ? { 'ratelimit-policy': `"burst";q=${plan.burst};w=2`, ratelimit: `"burst";r=${remaining};t=${reset}` }
            : { 'x-ratelimit-limit': String(plan.burst), 'x-ratelimit-remaining': String(remaining), 'x-ratelimit-reset': String(reset) };
        return allowed ? [200, OK, headers] : [429, { status: 429 }, { ...headers, 'retry-after': '1' }];
      });
      const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens(), clock });
      let next = 0;
      const worker = async () => {
        while (next++ < 200) await client.predict(ROWS);
      };
      await Promise.all(Array.from({ length: 20 }, worker));
      assert.equal(stub.requests.length, 200, 'every call took one attempt: none was refused');
    });
  }
});

describe('PredictorClient with a real TokenSource', () => {
  it('makes one token request for 50 concurrent predict calls on an empty cache', async () => {
    const issuer = await startStubIssuer({ expiresIn: 300 });
    stubs.push(issuer);
    const stub = await predictor(() => [200, OK]);
    const client = new PredictorClient({ baseUrl: stub.url, tokens: new TokenSource({ issuer: issuer.url, clientId: 'c', clientSecret: () => 's' }) });
    await Promise.all(Array.from({ length: 50 }, () => client.predict([[1, 2, 3, 4]])));
    assert.equal(issuer.tokenRequests(), 1);
    assert.equal(stub.requests.length, 50);
  });
});
