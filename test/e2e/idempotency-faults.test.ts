import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { requirePostgres, TEST_DATABASE_URL, uniqueSchemaName } from '../../predictor/src/testing/engines.js';
import { TcpFaultProxy } from '../../predictor/src/testing/tcp-fault-proxy.js';
import { stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { DEV_ENV, requestToken, startAuthServer, startPredictor, type RunningAuthServer, type RunningPredictor } from '../src/harness/system.js';
import { skipUnlessEngines } from '../../common/src/testing/skip-unless-engines.js';

/**
 * Issue 13, observations 1 and 2: a predictor on PostgreSQL through a proxy that cuts the
 * database while a keyed request's model runs, under each failure policy. Before the fix the
 * client got a 200 whose answer was never stored, and a later retry executed again with a new id.
 */

const ROW = [5.9, 3.0, 5.1, 1.8];
const MODEL_MS = 1_500;
const LEASE_MS = 2_000;

interface Answer {
  status: number;
  id: string | undefined;
  replayed: boolean;
  retryAfter: number | undefined;
}

async function predict(url: string, token: string, key: string): Promise<Answer> {
  const response = await fetch(`${url}/v1/predict`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify({ inputs: [ROW] }),
  });
  const body = (await response.json()) as { id?: string };
  const retryAfter = response.headers.get('retry-after');
  return { status: response.status, id: body.id, replayed: response.headers.get('idempotent-replayed') === 'true', retryAfter: retryAfter === null ? undefined : Number(retryAfter) };
}

/** Retries as the answers say (409 and 503 with Retry-After) until a 2xx, within a bound. */
async function retryUntilAnswered(url: string, token: string, key: string, seen: Answer[]): Promise<Answer> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const answer = await predict(url, token, key);
    seen.push(answer);
    if (answer.status === 200) return answer;
    assert.ok(answer.status === 409 || answer.status === 503, `only 409 and 503 while it recovers, got ${answer.status}`);
    assert.ok(answer.retryAfter !== undefined && answer.retryAfter >= 1 && answer.retryAfter <= Math.ceil(LEASE_MS / 1000), `Retry-After ${answer.retryAfter}`);
    if (Date.now() > deadline) throw new Error(`no answer for ${key}: ${JSON.stringify(seen)}`);
    await sleep(answer.retryAfter * 1000);
  }
}

describe('idempotency when PostgreSQL is cut while the model runs', { skip: skipUnlessEngines(['postgres']) }, () => {
  const schema = uniqueSchemaName('idemfault');
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let admin: pg.Client;
  let auth: RunningAuthServer;
  let token: string;
  const proxies: TcpFaultProxy[] = [];

  before(async () => {
    await requirePostgres();
    dataDir = await temporaryDirectory('idempotency-faults');
    admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    auth = await startAuthServer({ dataDir: `${dataDir.path}/auth` });
    const issued = await requestToken(auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!, { scope: 'predict' });
    token = issued.body['access_token'] as string;
  });

  after(async () => {
    await stopAll();
    for (const proxy of proxies) await proxy.close();
    if (admin) {
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.end();
    }
    await dataDir?.remove();
  });

  async function predictorBehindProxy(name: string, policy: 'fail-closed' | 'degrade'): Promise<{ predictor: RunningPredictor; proxy: TcpFaultProxy }> {
    const { proxy, url } = await TcpFaultProxy.forUrl(TEST_DATABASE_URL, 5432);
    proxies.push(proxy);
    const predictor = await startPredictor({
      issuer: auth.issuer,
      dataDir: `${dataDir.path}/${name}`,
      env: {
        DATABASE_URL: url,
        DATABASE_SCHEMA: schema,
        IDEMPOTENCY_ON_STORE_FAILURE: policy,
        IDEMPOTENCY_LEASE_MS: String(LEASE_MS),
        SIMULATED_INFERENCE_MS: String(MODEL_MS),
      },
    });
    return { predictor, proxy };
  }

  /**
   * Until the predictor holds the claim and is executing: the claim's row alone is not enough (its
   * commit may still be on the way back when the proxy is cut, and then the claim fails instead),
   * so it waits for the lease's first renewal, which the predictor sends only once it has the claim.
   */
  const claimed = async (key: string) => {
    const deadline = Date.now() + 10_000;
    let claimedUntil: string | undefined;
    while (Date.now() < deadline) {
      const { rows } = await admin.query<{ locked_until: string }>(`SELECT locked_until::text FROM "${schema}".idempotency_keys WHERE key = $1 AND status IS NULL`, [key]);
      const lockedUntil = rows[0]?.locked_until;
      if (lockedUntil !== undefined && claimedUntil !== undefined && lockedUntil !== claimedUntil) return;
      claimedUntil ??= lockedUntil;
      await sleep(20);
    }
    throw new Error(`${key} was never claimed and renewed in PostgreSQL`);
  };

  /** Ids of the usage events PostgreSQL's outbox holds for a key, and that the in-process ledger counted once its relay ran. */
  const usageEventsOf = async (key: string): Promise<string[]> => {
    const { rows } = await admin.query<{ id: string }>(`SELECT event::jsonb->>'id' AS id FROM "${schema}".usage_outbox WHERE event::jsonb->>'idempotencyKey' = $1`, [key]);
    return rows.map((row) => row.id);
  };

  /** The predictor's own account of one key: the idempotency outcome of each request for it. */
  const outcomesOf = (predictor: RunningPredictor, key: string) =>
    predictor.process.records.filter((record) => record.msg === 'request' && record['idempotencyKey'] === key).map((record) => record['idempotency']);

  it('fail-closed: answers 503, never a 200 it did not store; the retry executes once and every replay returns that answer', async () => {
    const { predictor, proxy } = await predictorBehindProxy('fail-closed', 'fail-closed');
    const key = 'cut-while-running-fail-closed';
    const first = predict(predictor.url, token, key);
    await claimed(key);
    proxy.set('refuse');
    const refused = await first;
    assert.equal(refused.status, 503, 'the result could not be stored, so it was not sent');
    assert.equal(refused.id, undefined);
    assert.equal(refused.retryAfter, 1);

    proxy.set('up');
    const seen: Answer[] = [];
    const answered = await retryUntilAnswered(predictor.url, token, key, seen);
    assert.ok(answered.id?.startsWith('pred_'));
    const replay = await predict(predictor.url, token, key);
    assert.deepEqual({ status: replay.status, id: replay.id, replayed: replay.replayed }, { status: 200, id: answered.id, replayed: true });

    await predictor.process.waitForLog((record) => record['idempotencyKey'] === key && record['idempotency'] === 'replayed', 'the replay');
    const outcomes = outcomesOf(predictor, key);
    assert.deepEqual(outcomes.filter((outcome) => outcome === 'executed'), ['executed'], `one answer sent and stored: ${outcomes.join(', ')}`);
    assert.equal(outcomes[0], 'refused');
    // The crash point "before the commit": the refused attempt wrote no usage event, the answered one exactly one.
    assert.deepEqual(await usageEventsOf(key), [answered.id]);
    assert.equal(predictor.process.records.filter((record) => record['status'] === 500).length, 0);
  });

  it('degrade: a key answered from memory during the outage keeps that answer at this replica after PostgreSQL is back', async () => {
    const { predictor, proxy } = await predictorBehindProxy('degrade', 'degrade');
    const key = 'answered-from-memory';
    proxy.set('refuse');
    const during = await predict(predictor.url, token, key);
    assert.equal(during.status, 200);
    const replayDuring = await predict(predictor.url, token, key);
    assert.deepEqual([replayDuring.id, replayDuring.replayed], [during.id, true]);

    proxy.set('up');
    const deadline = Date.now() + 10_000;
    for (;;) {
      const ready = (await (await fetch(`${predictor.url}/readyz`)).json()) as { status: string };
      if (ready.status === 'ready') break;
      assert.ok(Date.now() < deadline, 'PostgreSQL back within 10 s');
      await sleep(100);
    }
    const replayAfter = await predict(predictor.url, token, key);
    assert.deepEqual([replayAfter.status, replayAfter.id, replayAfter.replayed], [200, during.id, true], 'not executed a second time');

    // Cut while the model runs: the claim is in PostgreSQL, its answer cannot be stored there.
    const cutKey = 'cut-while-running-degrade';
    const first = predict(predictor.url, token, cutKey);
    await claimed(cutKey);
    proxy.set('refuse');
    assert.equal((await first).status, 503, 'not sent: it was not stored');
    const answered = await retryUntilAnswered(predictor.url, token, cutKey, []);
    proxy.set('up');
    const replay = await predict(predictor.url, token, cutKey);
    assert.deepEqual([replay.id, replay.replayed], [answered.id, true]);

    await predictor.process.waitForLog((record) => record['idempotencyKey'] === cutKey && record['idempotency'] === 'replayed', 'the replay');
    for (const each of [key, cutKey]) assert.equal(outcomesOf(predictor, each).filter((outcome) => outcome === 'executed').length, 1, `${each}: one answer`);
    assert.deepEqual(await usageEventsOf(cutKey), [], 'answered from memory: its event is in this replica\'s memory outbox, not in PostgreSQL');
    assert.equal(predictor.process.records.filter((record) => record['status'] === 500).length, 0);
  });
});
