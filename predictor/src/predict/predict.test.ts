import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger, type UsageEvent } from '@m2m/common';
import { buildApp } from '../app.js';
import { MemoryApiKeyStore } from '../auth/api-key-store-sqlite.js';
import { createApiKeyVerifier, newApiKey } from '../auth/api-keys.js';
import type { Principal } from '../auth/principal.js';
import { createMetrics } from '../http/metrics.js';
import { buildMetricsApp } from '../http/metrics-app.js';
import { MemoryIdempotencyStore } from '../idempotency/memory.js';
import { ManualClock } from '../idempotency/store-contract.js';
import { MemoryRateLimiter } from '../limits/memory.js';
import { loadIrisModel, type IrisModel } from '../model/index.js';
import { close, listen } from '../server.js';
import { testDeps } from '../testing/test-app.js';

const ROW = [5.1, 3.5, 1.4, 0.2];
const principals: Record<string, Principal> = {
  standard: { clientId: 'demo-caller', scopes: new Set(['predict', 'models:read']), plan: 'standard', authMethod: 'bearer-jwt', tokenId: 't', expiresAt: undefined },
  free: { clientId: 'demo-free', scopes: new Set(['predict', 'models:read']), plan: 'free', authMethod: 'bearer-jwt', tokenId: 't', expiresAt: undefined },
  other: { clientId: 'other-client', scopes: new Set(['predict']), plan: 'standard', authMethod: 'bearer-jwt', tokenId: 't', expiresAt: undefined },
  readonly: { clientId: 'demo-readonly', scopes: new Set(['models:read']), plan: 'free', authMethod: 'bearer-jwt', tokenId: 't', expiresAt: undefined },
};
/** Tokens are principal names here; token verification itself is tested in app.test.ts. */
const verifyToken = async (token: string) => {
  const principal = principals[token];
  if (!principal) throw new (await import('../http/problems.js')).InvalidToken('unknown test token');
  return principal;
};

/** Counts model executions. */
function countingModel(): IrisModel & { executions: number } {
  const model = loadIrisModel();
  const counting = { ...model, executions: 0, predict: (rows: Parameters<IrisModel['predict']>[0]) => (counting.executions++, model.predict(rows)) };
  return counting;
}

function setup(overrides: Parameters<typeof testDeps>[0] | object = {}) {
  let now = Date.UTC(2026, 10, 23, 12, 0, 0);
  const clock = { now: () => now, advance: (ms: number) => (now += ms) };
  const model = countingModel();
  const deps = testDeps({ verifyToken, model, limiter: new MemoryRateLimiter({ now: clock.now }), ...overrides });
  const app = buildApp(deps);
  const predict = (token: string, options: { key?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
    app.request('/v1/predict', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(options.key ? { 'idempotency-key': options.key } : {}), ...options.headers },
      body: JSON.stringify(options.body ?? { inputs: [ROW] }),
    });
  return { app, model, clock, deps, predict };
}

/** Every usage event in the outbox, relayed once. */
async function drainEvents(store: MemoryIdempotencyStore): Promise<UsageEvent[]> {
  const events: UsageEvent[] = [];
  await store.relay(1_000, async (batch) => (events.push(...batch), new Set(batch.map((event) => event.id))));
  return events;
}

describe('idempotency on POST /v1/predict', () => {
  it('replays a completed key byte-identically with Idempotent-Replayed and does not charge quota', async () => {
    const { predict, model } = setup();
    const first = await predict('free', { key: 'order-1' });
    const firstBody = await first.text();
    const replayed = await predict('free', { key: 'order-1' });
    assert.equal(replayed.status, 200);
    assert.equal(await replayed.text(), firstBody);
    assert.equal(replayed.headers.get('idempotent-replayed'), 'true');
    assert.equal(first.headers.get('idempotent-replayed'), null);
    assert.match(replayed.headers.get('x-request-id') ?? '', /^[\w-]{36}$/, 'a replay is a new request with an id of its own');
    assert.notEqual(replayed.headers.get('x-request-id'), first.headers.get('x-request-id'));
    assert.equal(model.executions, 1);
    assert.equal(replayed.headers.get('x-ratelimit-remaining'), first.headers.get('x-ratelimit-remaining'), 'the replay was not charged');
  });

  it('executes the model once for 200 concurrent duplicates; every answer is the stored one or a 409', async () => {
    const { predict, model } = setup();
    const responses = await Promise.all(Array.from({ length: 200 }, () => predict('standard', { key: 'same-key' })));
    assert.equal(model.executions, 1);
    const bodies = new Set<string>();
    for (const response of responses) {
      assert.ok(response.status === 200 || response.status === 409, `status ${response.status}`);
      if (response.status === 200) bodies.add(await response.text());
      else assert.ok(Number(response.headers.get('retry-after')) >= 1);
    }
    assert.equal(bodies.size, 1);
  });

  it('answers 422 when a key is reused for a different request', async () => {
    const { predict } = setup();
    await predict('standard', { key: 'k' });
    const reused = await predict('standard', { key: 'k', body: { inputs: [[1, 1, 1, 1]] } });
    assert.equal(reused.status, 422);
    assert.match(((await reused.json()) as { type: string }).type, /idempotency-key-reused/);
  });

  it('scopes keys to the client', async () => {
    const { predict, model } = setup();
    await predict('standard', { key: 'shared' });
    assert.equal((await predict('other', { key: 'shared' })).headers.get('idempotent-replayed'), null);
    assert.equal(model.executions, 2);
  });

  it('answers 400 for a malformed key and, when keys are required, for a missing one', async () => {
    const { predict } = setup();
    assert.equal((await predict('standard', { key: 'x'.repeat(256) })).status, 400);
    assert.equal((await predict('standard', { headers: { 'idempotency-key': 'tab\there' } })).status, 400);
    const strict = setup({ requireIdempotencyKey: true });
    assert.equal((await strict.predict('standard')).status, 400);
    assert.equal((await strict.predict('standard', { key: 'present' })).status, 200);
  });

  it('refuses two Idempotency-Key field lines (400 naming the header) instead of executing the joined key "a, b"', async () => {
    const { app, model } = setup();
    const { server, port } = await listen(app, 0, '127.0.0.1');
    try {
      const send = (keys: string[]) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const request = httpRequest({ host: '127.0.0.1', port, path: '/v1/predict', method: 'POST', headers: { authorization: 'Bearer standard', 'content-type': 'application/json' } }, (response) => {
            let body = '';
            response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk)).on('end', () => resolve({ status: response.statusCode ?? 0, body }));
          });
          request.on('error', reject);
          request.setHeader('idempotency-key', keys); // an array: one field line per value
          request.end(JSON.stringify({ inputs: [ROW] }));
        });
      const twice = await send(['a', 'b']);
      assert.equal(twice.status, 400);
      const problem = JSON.parse(twice.body) as { type: string; detail: string; header: string };
      assert.match(problem.type, /idempotency-key-repeated/);
      assert.match(problem.detail, /one Idempotency-Key header field/);
      assert.equal(problem.header, 'Idempotency-Key');
      assert.equal(model.executions, 0);
      // One field line whose value holds ", " is one (bare) key, as before.
      assert.equal((await send(['a, b'])).status, 200);
      assert.equal(model.executions, 1);
    } finally {
      await close(server);
    }
  });

  it('does not store validation failures: the same key can be retried with a valid body', async () => {
    const { predict, model } = setup();
    assert.equal((await predict('standard', { key: 'retry-me', body: { inputs: [[1, 2]] } })).status, 422);
    const retried = await predict('standard', { key: 'retry-me' });
    assert.equal(retried.status, 200);
    assert.equal(retried.headers.get('idempotent-replayed'), null);
    assert.equal(model.executions, 1);
  });

  it('does not store a 429: after the wait the same key executes', async () => {
    const { predict, model, clock } = setup();
    for (let i = 0; i < 6; i += 1) await predict('free');
    const limited = await predict('free', { key: 'later' });
    assert.equal(limited.status, 429);
    clock.advance(Number(limited.headers.get('retry-after')) * 1000);
    const retried = await predict('free', { key: 'later' });
    assert.equal(retried.status, 200);
    assert.equal(model.executions, 7);
  });

  it('does not store a 5xx: the key can be retried', async () => {
    let fail = true;
    const model = loadIrisModel();
    const flaky = { ...model, predict: (rows: Parameters<IrisModel['predict']>[0]) => {
      if (fail) throw new Error('model crashed');
      return model.predict(rows);
    } };
    const { predict } = setup({ model: flaky });
    assert.equal((await predict('standard', { key: 'flaky' })).status, 500);
    fail = false;
    assert.equal((await predict('standard', { key: 'flaky' })).status, 200);
  });

  it('answers 503 with Retry-After, never the prediction, to a holder whose lease was taken over, and counts lease_lost in the metrics', async () => {
    const storeClock = new ManualClock();
    const leaseMs = 5_000;
    const store = new MemoryIdempotencyStore({ leaseMs, now: storeClock.now });
    // A real take-over through the store's own fencing: while the first request holds the key,
    // its lease runs out unrenewed and a successor (another replica) claims the same request.
    const claim = store.claim.bind(store);
    const complete = store.complete.bind(store);
    let seenFingerprint: string | undefined;
    let successorToken: number | undefined;
    store.claim = async (clientId, key, fingerprint) => ((seenFingerprint ??= fingerprint), claim(clientId, key, fingerprint));
    store.complete = async (clientId, key, token, response, usage) => {
      if (successorToken === undefined) {
        storeClock.advance(leaseMs);
        const taken = await claim(clientId, key, seenFingerprint!);
        assert.equal(taken.outcome, 'claimed', 'the successor takes the abandoned key over');
        successorToken = (taken as { token: number }).token;
      }
      return complete(clientId, key, token, response, usage);
    };
    const metrics = createMetrics({ collectProcessMetrics: false });
    const ids: string[] = [];
    const { predict, model } = setup({ idempotencyStore: store, metrics, newPredictionId: () => (ids.push(`pred_${ids.length}`), ids.at(-1)!) });

    const lost = await predict('standard', { key: 'taken-over' });
    assert.equal(lost.status, 503);
    assert.equal(lost.headers.get('retry-after'), '1');
    assert.equal(lost.headers.get('idempotent-replayed'), null);
    const body = await lost.text();
    assert.match(JSON.parse(body).type as string, /idempotency-lease-lost$/);
    assert.ok(!body.includes(ids[0]!), 'the dropped result is not sent');
    assert.equal(model.executions, 1);
    assert.deepEqual(await drainEvents(store), [], 'the dropped result is not metered');

    // Not stored either: the retry meets the successor's lease (409 within one lease), then its answer alone.
    const waiting = await predict('standard', { key: 'taken-over' });
    assert.equal(waiting.status, 409);
    assert.ok(Number(waiting.headers.get('retry-after')) <= leaseMs / 1000);
    const successorAnswer = { status: 200, headers: { 'content-type': 'application/json' }, body: '{"id":"pred_successor"}' };
    assert.equal(await complete('demo-caller', 'taken-over', successorToken!, successorAnswer), 'ok');
    const replayed = await predict('standard', { key: 'taken-over' });
    assert.equal(replayed.status, 200);
    assert.equal(replayed.headers.get('idempotent-replayed'), 'true');
    assert.equal(await replayed.text(), successorAnswer.body);

    const text = await (await buildMetricsApp({ metrics, logger: createLogger('predictor', 'silent') }).request('/metrics')).text();
    assert.match(text, /^predictor_idempotency_outcomes_total\{outcome="lease_lost"\} 1$/m);
    assert.doesNotMatch(text, /predictor_idempotency_outcomes_total\{outcome="executed"\}/, 'the dropped result is never counted as executed');
    assert.match(text, /^predictor_http_requests_total\{route="\/v1\/predict",method="POST",status="503"\} 1$/m);
  });
});

describe('rate limits on the API', () => {
  it('sends the X-RateLimit trio and the IETF fields on every authenticated response', async () => {
    const { predict, app } = setup();
    const ok = await predict('standard');
    assert.equal(ok.headers.get('x-ratelimit-limit'), '1000');
    assert.equal(ok.headers.get('x-ratelimit-remaining'), '999');
    assert.match(ok.headers.get('x-ratelimit-reset') ?? '', /^\d+$/);
    assert.equal(ok.headers.get('ratelimit-policy'), '"burst";q=1000;w=1, "daily";q=1000000;w=86400');
    assert.match(ok.headers.get('ratelimit') ?? '', /^"burst";r=999;t=\d+, "daily";r=999999;t=43200$/);
    const refused = await app.request('/v1/predict', { method: 'POST', headers: { authorization: 'Bearer readonly' } });
    assert.equal(refused.status, 403);
    assert.ok(refused.headers.get('ratelimit'), 'a 403 to an authenticated client carries the headers too');
    const invalid = await predict('standard', { body: { inputs: [] } });
    assert.equal(invalid.status, 422);
    assert.equal(invalid.headers.get('x-ratelimit-remaining'), '999', 'validation failures are not charged');
  });

  it('lets a burst of 100 from the free plan through up to the bucket, then 429 with Retry-After and the violated policy', async () => {
    const { predict, clock } = setup();
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 100; i += 1) {
      last = await predict('free');
      statuses.push(last.status);
    }
    assert.equal(statuses.filter((status) => status === 200).length, 6);
    assert.equal(last?.status, 429);
    assert.equal(last?.headers.get('retry-after'), '1');
    assert.equal(last?.headers.get('x-ratelimit-remaining'), '0');
    const problem = (await last!.json()) as Record<string, unknown>;
    assert.equal(problem['violated_policy'], 'burst');
    assert.equal(last?.headers.get('content-type'), 'application/problem+json');
    // The real wait for one token at 2/s is 0.5 s; Retry-After rounds it up, never down.
    clock.advance(499);
    assert.equal((await predict('free')).status, 429);
    clock.advance(1);
    assert.equal((await predict('free')).status, 200);
    assert.ok(Number(last?.headers.get('retry-after')) * 1000 >= 500);
  });

  it('does not charge 401 and 403 responses', async () => {
    const { predict, app } = setup();
    for (let i = 0; i < 20; i += 1) {
      await app.request('/v1/predict', { method: 'POST' });
      await app.request('/v1/predict', { method: 'POST', headers: { authorization: 'Bearer nobody' } });
    }
    assert.equal((await predict('free')).headers.get('x-ratelimit-remaining'), '5');
  });

  it('enforces the daily quota with Retry-After until the next UTC midnight', async () => {
    const { predict, clock } = setup();
    for (let i = 0; i < 1000; i += 1) {
      assert.equal((await predict('free')).status, 200);
      clock.advance(500);
    }
    const refused = await predict('free');
    assert.equal(refused.status, 429);
    assert.equal(((await refused.json()) as Record<string, unknown>)['violated_policy'], 'daily');
    const wait = Number(refused.headers.get('retry-after'));
    clock.advance(wait * 1000);
    assert.equal((await predict('free')).status, 200);
  });
});

describe('API keys', () => {
  async function withApiKey(scopes: string[]) {
    const store = new MemoryApiKeyStore();
    const { apiKey, record } = newApiKey({ clientId: 'batch-job', scopes, plan: 'standard', now: new Date() });
    await store.insert(record);
    return { store, apiKey, record, ...setup({ verifyApiKey: createApiKeyVerifier(store) }) };
  }
  const call = (app: ReturnType<typeof setup>['app'], headers: Record<string, string>) =>
    app.request('/v1/predict', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ inputs: [ROW] }) });

  it('lets a valid X-API-Key in with its scopes and plan', async () => {
    const { app, apiKey } = await withApiKey(['predict']);
    const response = await call(app, { 'x-api-key': apiKey });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-ratelimit-limit'), '1000');
  });

  it('refuses a wrong secret, an unknown id, a malformed key and a revoked key with 401', async () => {
    const { app, apiKey, store, record } = await withApiKey(['predict']);
    const wrongSecret = `${apiKey.slice(0, -4)}AAAA`;
    for (const key of [wrongSecret, 'm2mk_AAAAAAAAAAAAAAAA_' + 'A'.repeat(43), 'not-a-key']) {
      assert.equal((await call(app, { 'x-api-key': key })).status, 401);
    }
    await store.revoke(record.id, new Date().toISOString());
    const revoked = await call(app, { 'x-api-key': apiKey });
    assert.equal(revoked.status, 401);
    assert.match(((await revoked.json()) as { detail: string }).detail, /revoked/);
  });

  it('applies scopes to API keys (403) and refuses a request carrying both credentials (400)', async () => {
    const { app, apiKey } = await withApiKey(['models:read']);
    assert.equal((await call(app, { 'x-api-key': apiKey })).status, 403);
    assert.equal((await call(app, { 'x-api-key': apiKey, authorization: 'Bearer standard' })).status, 400);
  });
});

describe('observability', () => {
  it('serves Prometheus metrics: requests by route and status, latency, 429s, idempotency outcomes, JWKS fetches', async () => {
    const metrics = createMetrics({ collectProcessMetrics: false });
    metrics.jwksFetches.inc({ outcome: 'success' });
    const { app, predict } = setup({ metrics });
    await predict('standard', { key: 'm' });
    await predict('standard', { key: 'm' });
    for (let i = 0; i < 7; i += 1) await predict('free');
    await app.request('/v1/predict'); // GET: 405
    const text = await (await buildMetricsApp({ metrics, logger: createLogger('predictor', 'silent') }).request('/metrics')).text();
    assert.match(text, /predictor_http_requests_total\{route="\/v1\/predict",method="POST",status="200"\} 8/);
    assert.match(text, /predictor_http_request_duration_seconds_bucket\{le="0\.005",route="\/v1\/predict",method="POST"\}/);
    assert.match(text, /predictor_rate_limited_total\{policy="burst",plan="free"\} 1/);
    assert.match(text, /predictor_idempotency_outcomes_total\{outcome="executed"\} 1/);
    assert.match(text, /predictor_idempotency_outcomes_total\{outcome="replayed"\} 1/);
    assert.match(text, /predictor_jwks_fetches_total\{outcome="success"\} 1/);
    assert.match(text, /predictor_http_requests_total\{route="unmatched",method="GET",status="405"\} 1/);
  });

  it('serves /metrics on the metrics listener only: the API answers 404 for it', async () => {
    const metrics = createMetrics({ collectProcessMetrics: false });
    const { app } = setup({ metrics });
    const onApi = await app.request('/metrics');
    assert.equal(onApi.status, 404);
    assert.equal(onApi.headers.get('content-type'), 'application/problem+json');
    const metricsApp = buildMetricsApp({ metrics, logger: createLogger('predictor', 'silent') });
    const served = await metricsApp.request('/metrics');
    assert.equal(served.status, 200);
    assert.match(served.headers.get('content-type') ?? '', /^text\/plain/);
    assert.match(await served.text(), /predictor_http_requests_total\{route="unmatched",method="GET",status="404"\} 1/);
    const posted = await metricsApp.request('/metrics', { method: 'POST' });
    assert.equal(posted.status, 405);
    assert.equal(posted.headers.get('allow'), 'GET, HEAD');
    assert.equal((await metricsApp.request('/v1/predict', { method: 'POST' })).status, 404);
  });

  it('logs one line per request with route, status, client, limit decision and idempotency outcome, and no credential', async () => {
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) });
    const store = new MemoryApiKeyStore();
    const { apiKey, record } = newApiKey({ clientId: 'batch-job', scopes: ['predict'], plan: 'standard', now: new Date() });
    await store.insert(record);
    const { predict } = setup({ logger: createLogger('predictor', 'info', sink), verifyApiKey: createApiKeyVerifier(store) });
    const secretCookie = `session=${randomUUID()}`;
    await predict('standard', { key: 'log-me', headers: { cookie: secretCookie } });
    await predict('nobody-token-secret-value');
    await predict('standard', { headers: { 'x-api-key': apiKey, authorization: '' } });
    const [first] = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.equal(first?.['route'], '/v1/predict');
    assert.equal(first?.['status'], 200);
    assert.equal(first?.['clientId'], 'demo-caller');
    assert.equal(first?.['idempotency'], 'executed');
    assert.deepEqual((first?.['rateLimit'] as { allowed: boolean }).allowed, true);
    // The request line skips the redaction walk: a new field here must be one that can never hold a credential.
    const REQUEST_LINE_FIELDS = ['level', 'time', 'service', 'pid', 'msg', 'requestId', 'method', 'route', 'status', 'durationMs', 'clientId', 'authMethod', 'kid', 'idempotencyKey', 'rateLimit', 'idempotency'];
    for (const line of lines.map((text) => JSON.parse(text) as Record<string, unknown>).filter((line) => line['msg'] === 'request')) {
      assert.deepEqual(Object.keys(line).filter((key) => !REQUEST_LINE_FIELDS.includes(key)), [], 'a field the request line was not reviewed for');
    }
    const all = lines.join('\n');
    for (const secret of [secretCookie, 'nobody-token-secret-value', apiKey, apiKey.slice('m2mk_'.length + 17)]) assert.ok(!all.includes(secret), `log leaks ${secret.slice(0, 12)}…`);
  });
});

describe('usage metering on POST /v1/predict', () => {
  /** Everything in the outbox, relayed once (and so marked sent). */
  async function drain(store: MemoryIdempotencyStore): Promise<UsageEvent[]> {
    const events: UsageEvent[] = [];
    await store.relay(1_000, async (batch) => (events.push(...batch), new Set(batch.map((event) => event.id))));
    return events;
  }

  it('meters each executed prediction once, with or without a key, and never a replay, a 409 or a 429', async () => {
    const store = new MemoryIdempotencyStore();
    const { predict } = setup({ idempotencyStore: store });
    const keyed = await predict('standard', { key: 'order-1', body: { inputs: [ROW, ROW] } });
    const body = (await keyed.json()) as { id: string };
    await predict('standard', { key: 'order-1', body: { inputs: [ROW, ROW] } });
    const unkeyed = (await (await predict('free')).json()) as { id: string };
    for (let index = 0; index < 10; index += 1) await predict('free'); // the free burst is 6: the rest are 429
    const events = await drain(store);
    assert.equal(events.length, 1 + 6, "the keyed one, and the free burst of 6");
    assert.deepEqual(
      { ...events[0], occurredAt: undefined },
      {
        id: body.id,
        type: 'prediction.executed',
        clientId: 'demo-caller',
        plan: 'standard',
        credential: { method: 'bearer-jwt', id: undefined },
        rows: 2,
        modelId: loadIrisModel().id,
        idempotencyKey: 'order-1',
        occurredAt: undefined,
      },
    );
    assert.equal(events[1]?.id, unkeyed.id);
    assert.equal(events[1]?.idempotencyKey, undefined);
  });

  it('answers 503, and not the prediction, when the event of a request without a key cannot be written', async () => {
    const store = new MemoryIdempotencyStore();
    store.append = async () => Promise.reject(Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' }));
    const { predict } = setup({ idempotencyStore: store });
    const response = await predict('standard');
    assert.equal(response.status, 503);
    assert.equal(response.headers.get('retry-after'), '1');
    assert.equal(((await response.json()) as { id?: string }).id, undefined);
  });
});
