import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '@m2m/common';
import { buildUsageAdminApp } from './admin-app.js';
import type { UsageLedger } from './ledger.js';
import { usageEvent } from './ledger-contract.js';
import { SqliteUsageLedger } from './ledger-sqlite.js';
import { usageReport } from './report.js';

const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef0123';
const AUTHORIZED = { authorization: `Bearer ${ADMIN_TOKEN}` };

let ledger: SqliteUsageLedger;
let logLines: string[];

before(async () => {
  ledger = SqliteUsageLedger.open(':memory:');
  await ledger.record(usageEvent({ clientId: 'client-a', rows: 3, occurredAt: '2024-03-01T10:00:00.000Z' }));
  await ledger.record(usageEvent({ clientId: 'client-b', rows: 4, occurredAt: '2024-03-01T11:00:00.000Z' }));
  await ledger.record(usageEvent({ clientId: 'client-a', rows: 5, occurredAt: '2024-03-02T10:00:00.000Z' }));
});

after(async () => {
  await ledger.close();
});

function app(overrides: { ledger?: UsageLedger } = {}) {
  logLines = [];
  const logger = createLogger('usage', 'info', { write: (line: string) => void logLines.push(line) });
  return buildUsageAdminApp({ ledger: overrides.ledger ?? ledger, adminToken: ADMIN_TOKEN, logger });
}

async function problemOf(response: Response): Promise<Record<string, unknown>> {
  assert.equal(response.headers.get('content-type'), 'application/problem+json');
  return (await response.json()) as Record<string, unknown>;
}

describe('GET /v1/usage', () => {
  it('answers the same JSON as `npm run usage -- report --json`, not to be cached', async () => {
    const response = await app().request('/v1/usage', { headers: AUTHORIZED });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('cache-control'), 'no-store');
    assert.deepEqual(await response.json(), usageReport(await ledger.report()));
  });

  it('filters by client and by day', async () => {
    const response = await app().request('/v1/usage?client=client-a&day=2024-03-02', { headers: AUTHORIZED });
    assert.deepEqual(await response.json(), usageReport([{ clientId: 'client-a', day: '2024-03-02', predictions: 1, rows: 5 }], { clientId: 'client-a', day: '2024-03-02' }));
    const byDay = (await (await app().request('/v1/usage?day=2024-03-01', { headers: AUTHORIZED })).json()) as { totals: unknown[] };
    assert.equal(byDay.totals.length, 2);
  });

  it('accepts the auth scheme in any case', async () => {
    assert.equal((await app().request('/v1/usage', { headers: { authorization: `bearer ${ADMIN_TOKEN}` } })).status, 200);
  });

  it('answers 401 with a Bearer challenge without a token, and tells nothing of the usage', async () => {
    for (const headers of [{}, { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` }, { authorization: 'Bearer' }] as Record<string, string>[]) {
      const response = await app().request('/v1/usage?client=client-a', { headers });
      assert.equal(response.status, 401);
      assert.equal(response.headers.get('www-authenticate'), 'Bearer realm="usage-admin"');
      const problem = await problemOf(response);
      assert.equal(problem['type'], 'urn:m2m-inference:problem:missing-credentials');
      assert.equal(problem['status'], 401);
    }
  });

  it('answers 401 invalid_token to a wrong token, a prefix of the right one or the right one with more, and never logs it', async () => {
    for (const token of ['wrong', ADMIN_TOKEN.slice(0, -1), `${ADMIN_TOKEN}x`]) {
      const response = await app().request('/v1/usage', { headers: { authorization: `Bearer ${token}` } });
      assert.equal(response.status, 401);
      assert.equal(response.headers.get('www-authenticate'), 'Bearer realm="usage-admin", error="invalid_token"');
      assert.equal((await problemOf(response))['type'], 'urn:m2m-inference:problem:invalid-token');
      assert.ok(logLines.some((line) => line.includes('usage-admin.unauthorized')));
      assert.ok(logLines.every((line) => !line.includes(token)), 'the presented token is not logged');
    }
  });

  it('authenticates before it validates: a bad day without a token is a 401', async () => {
    assert.equal((await app().request('/v1/usage?day=nope')).status, 401);
  });

  for (const [query, detail] of [
    ['day=2024-02-30', /the day must be a UTC date written YYYY-MM-DD, got "2024-02-30"/i],
    ['day=2024-3-1', /YYYY-MM-DD/],
    ['client=', /client id must not be empty/],
    ['client=a&client=b', /Give "client" at most once/],
    ['since=2024-03-01', /Unknown query parameter "since"/],
    ['__proto__=x', /Unknown query parameter "__proto__"/],
  ] as const) {
    it(`answers 400 problem+json to ?${query}`, async () => {
      const response = await app().request(`/v1/usage?${query}`, { headers: AUTHORIZED });
      assert.equal(response.status, 400);
      const problem = await problemOf(response);
      assert.equal(problem['type'], 'urn:m2m-inference:problem:invalid-query');
      assert.match(String(problem['detail']), detail);
    });
  }

  it('answers 503 with Retry-After when the ledger cannot be read', async () => {
    const broken = SqliteUsageLedger.open(':memory:');
    await broken.close();
    const response = await app({ ledger: broken }).request('/v1/usage', { headers: AUTHORIZED });
    assert.equal(response.status, 503);
    assert.equal(response.headers.get('retry-after'), '1');
    assert.equal((await problemOf(response))['type'], 'urn:m2m-inference:problem:ledger-unavailable');
  });

  it('answers 405 with Allow to another method, and 404 problem+json to another path', async () => {
    const post = await app().request('/v1/usage', { method: 'POST', headers: AUTHORIZED });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET');
    const missing = await app().request('/v1/nothing', { headers: AUTHORIZED });
    assert.equal(missing.status, 404);
    assert.equal((await problemOf(missing))['type'], 'urn:m2m-inference:problem:not-found');
  });
});

describe('GET /healthz', () => {
  it('answers 200 without a token while the ledger is readable, 503 once it is not', async () => {
    const own = SqliteUsageLedger.open(':memory:');
    const response = await app({ ledger: own }).request('/healthz');
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { status: 'ok' });
    await own.close();
    const down = await app({ ledger: own }).request('/healthz');
    assert.equal(down.status, 503);
    assert.equal((await problemOf(down))['type'], 'urn:m2m-inference:problem:ledger-unavailable');
  });
});

describe('buildUsageAdminApp', () => {
  it('refuses an empty admin token', () => {
    assert.throws(() => buildUsageAdminApp({ ledger, adminToken: '', logger: createLogger('usage', 'silent') }), RangeError);
  });
});
