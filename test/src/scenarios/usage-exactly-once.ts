import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { RetryBudget, type TokenSource } from 'caller';
import { requirePostgres, TEST_DATABASE_URL, uniqueSchemaName } from '../../../predictor/src/testing/engines.js';
import { TcpFaultProxy } from '../../../predictor/src/testing/tcp-fault-proxy.js';
import { PostgresUsageLedger } from '../../../usage/src/ledger-postgres.js';
import { openUsageStreamProbe, requireNats, TEST_NATS_URL, uniqueUsageStreamNames, type UsageStreamProbe } from '../../../usage/src/testing/nats.js';
import { startFaultProxy } from '../harness/fault-proxy.js';
import type { LogRecord } from '../harness/processes.js';
import { DEV_ENV, startUsageLedger, type RunningPredictor, type RunningUsageLedger } from '../harness/system.js';
import type { Scenario } from './catalogue.js';
import type { PredictionOutcome, ScenarioRun } from './framework.js';

/** When (ms after the traffic starts) each crash or cut happens. */
const RELAY_KILL_AT_MS = 2_500;
const BROKER_DOWN_AT_MS = 5_500;
const BROKER_UP_AT_MS = 9_500;
const CONSUMER_KILL_AT_MS = 12_000;
const TRAFFIC_MS = 16_000;
/** The rehearsal pauses: longer than the run, so the SIGKILL always comes first. */
const REHEARSAL_PAUSE_MS = 60_000;
/** The broker redelivers an unacked event after this (ms): short, so the consumer's crash is repaired within the run. */
const ACK_WAIT_MS = 2_000;
/** A key claimed by the killed predictor is free again after this (ms). */
const LEASE_MS = 2_000;
/** How long the outboxes and the consumer may take to go quiet after the traffic (ms). */
const SETTLE_TIMEOUT_MS = 30_000;
const UNKEYED_PAUSE_MS = 50;
/** Requests in flight at the killed predictor at most (one keyed worker per client): their `executed` line may die with it. */
const WORKERS_AT_KILLED_PREDICTOR = 2;
/** Plenty for both clients, so that every refusal is a fault's and not the plan's. */
const ROOMY = { burst: 10_000, refillPerSecond: 10_000, dailyQuota: 10_000_000 };
const PLANS = { plans: { standard: ROOMY, free: ROOMY }, defaultPlan: 'free' };
const CLIENTS = [
  { clientId: 'demo-caller', secretVariable: 'DEMO_CALLER_SECRET' },
  { clientId: 'demo-free', secretVariable: 'DEMO_FREE_SECRET' },
] as const;

/** One client's logical predictions: keyed ones through the lost-response proxies, unkeyed ones straight to the steady predictor. */
interface ClientTraffic {
  clientId: string;
  keyed: PredictionOutcome[];
  unkeyed: { ids: string[]; failures: string[]; startedAt: number[] };
}

export const usageExactlyOnce: Scenario = {
  name: 'usage-exactly-once',
  summary:
    'Keyed traffic through lost responses and retries, plus unkeyed requests, while a relay is SIGKILLed between publish and mark, the broker is down 4 s and the consumer is SIGKILLed before an ack: per client, ledger events = executions = successes.',
  plans: PLANS,
  engines: ['postgres', 'nats'],
  async run(run) {
    // On a machine without the engines, fail here with what is missing and how to start it.
    await requirePostgres();
    await requireNats();
    const names = uniqueUsageStreamNames('scenario');
    const durable = `scenario-ledger-${process.pid}-${Date.now().toString(36)}`;
    const predictorSchema = uniqueSchemaName('scenario_usage_predictors');
    const ledgerSchema = uniqueSchemaName('scenario_usage_ledger');
    const broker = await TcpFaultProxy.forUrl(TEST_NATS_URL, 4222);
    const probe = await openUsageStreamProbe(names.stream);
    const database = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await database.connect();
    run.defer(async () => {
      await broker.proxy.close();
      await probe.deleteStream();
      await probe.close();
      for (const schema of [predictorSchema, ledgerSchema]) await database.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await database.end();
    });

    const stream = { NATS_URL: broker.url, USAGE_STREAM: names.stream, USAGE_SUBJECT_PREFIX: names.subjectPrefix };
    const ledgerEnv = { ...stream, DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: ledgerSchema, USAGE_CONSUMER: durable, USAGE_ACK_WAIT_MS: String(ACK_WAIT_MS), LOG_LEVEL: 'debug' };
    const predictorEnv = { ...stream, IDEMPOTENCY_STORE: 'postgres', DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: predictorSchema, IDEMPOTENCY_LEASE_MS: String(LEASE_MS) };
    const ledgers: RunningUsageLedger[] = [await startUsageLedger({ dataDir: `${run.dataDir}/ledger-0`, env: ledgerEnv })];
    const [steady, pausing] = await Promise.all([
      run.startPredictor('predictor-steady', predictorEnv),
      run.startPredictor('predictor-pausing', { ...predictorEnv, USAGE_RELAY_PAUSE_AFTER_PUBLISH_MS: String(REHEARSAL_PAUSE_MS) }),
    ]);
    const live: RunningPredictor[] = [steady, pausing];
    const lossy = await Promise.all([steady, pausing].map((predictor) => startFaultProxy({ target: predictor.url, dropResponseEvery: 6, resetEvery: 13, onFault: (kind) => run.timeline.proxyFault(kind) })));
    const faults = run.timeline.event('proxy-faults', 'proxies: drop every 6th answer, reset every 13th connection');
    run.defer(async () => {
      await Promise.all(lossy.map((proxy) => proxy.close()));
    });

    const t0 = run.elapsed();
    const clients: ClientTraffic[] = CLIENTS.map(({ clientId }) => ({ clientId, keyed: [], unkeyed: { ids: [], failures: [], startedAt: [] } }));
    const traffic = Promise.all(
      CLIENTS.flatMap(({ secretVariable }, index) => {
        const into = clients[index]!;
        const secret = () => DEV_ENV[secretVariable]!;
        const keyed = lossy.map(async (proxy) => {
          const { client } = run.caller({
            clientId: into.clientId,
            secret,
            baseUrl: proxy.url,
            // Room to ride out the predictor's replacement (~2 s) and the lease its crash leaves:
            // a 409's Retry-After is up to the lease, and a wait above maxDelayMs ends the call
            // (with 1 s, one call under load was stopped by a Retry-After of 2).
            maxAttempts: 30,
            backoff: { maxDelayMs: LEASE_MS },
            retryBudget: new RetryBudget({ maxTokens: 10_000 }),
          });
          into.keyed.push(...(await run.traffic(client, { durationMs: TRAFFIC_MS, concurrency: 1, pauseMs: 20 })));
        });
        const { tokens } = run.caller({ clientId: into.clientId, secret });
        return [...keyed, unkeyedTraffic(run, tokens, steady.url, TRAFFIC_MS, into.unkeyed)];
      }),
    );

    // 1. A relay dies between JetStream's ack and the mark: its rows stay unsent, another relay publishes them again.
    let published: LogRecord | undefined;
    let held = new Set<string>();
    let killedAt = 0;
    await run.at(t0 + RELAY_KILL_AT_MS, 'SIGKILL predictor-pausing: its relay was acked by JetStream, rows not yet marked sent', async () => {
      published = await pausing.process.waitForLog((record) => record['event'] === 'usage.published_unmarked', 'usage.published_unmarked', 10_000);
      // Two looks, apart: rows the steady relay holds for a moment are not in both.
      const first = await heldOutboxRows(database, predictorSchema);
      await sleep(200);
      held = intersection(first, await heldOutboxRows(database, predictorSchema));
      killedAt = Date.now();
      await pausing.process.kill();
    }, 'process-killed');
    run.trace.note('Operator', 'replacement predictor started on the same port (no pause)');
    live[1] = await run.startPredictor('predictor-replacement', { ...predictorEnv, PREDICTOR_PORT: String(pausing.port) });

    // 2. The broker is down: predictions go on, the outboxes grow, then drain.
    let outageBacklog = 0;
    let brokerDown = false;
    const outageWindow = { from: 0, to: 0 };
    let watching: Promise<void> = Promise.resolve();
    await run.at(t0 + BROKER_DOWN_AT_MS, 'NATS: connections refused (every process)', async () => {
      broker.proxy.set('refuse');
      brokerDown = true;
      outageWindow.from = run.elapsed();
      watching = (async () => {
        while (brokerDown) {
          const backlogs = await Promise.all(live.map((predictor) => outboxBacklog(predictor).catch(() => 0)));
          outageBacklog = Math.max(outageBacklog, ...backlogs);
          await sleep(250);
        }
      })();
    }, 'store-cut');
    await run.at(t0 + BROKER_UP_AT_MS, 'NATS restored', async () => {
      broker.proxy.set('up');
      brokerDown = false;
      outageWindow.to = run.elapsed();
      await watching;
    }, 'store-restored');

    // 3. A consumer dies between the ledger's commit and its ack: the broker delivers the event again.
    let unacked: LogRecord | undefined;
    let ledgerKilledAt = 0;
    await run.at(t0 + CONSUMER_KILL_AT_MS, 'second usage-ledger (pausing before its acks) joins the consumer; SIGKILL once it committed an event', async () => {
      const pausingLedger = await startUsageLedger({ dataDir: `${run.dataDir}/ledger-1`, env: { ...ledgerEnv, USAGE_CONSUMER_PAUSE_BEFORE_ACK_MS: String(REHEARSAL_PAUSE_MS) } });
      unacked = await pausingLedger.process.waitForLog((record) => record['event'] === 'usage.recorded_unacked', 'usage.recorded_unacked', 10_000);
      ledgerKilledAt = Date.now();
      await pausingLedger.process.kill();
    }, 'process-killed');
    run.trace.note('Operator', 'replacement usage-ledger started (no pause)');
    ledgers.push(await startUsageLedger({ dataDir: `${run.dataDir}/ledger-2`, env: ledgerEnv }));
    await traffic;
    run.timeline.end(faults);

    run.trace.note('Operator', 'traffic over: wait until every outbox is empty and the consumer has nothing pending or unacked');
    const ledger = await PostgresUsageLedger.open({ connectionString: TEST_DATABASE_URL, schema: ledgerSchema });
    try {
      const settled = await waitUntilQuiet(live, probe, durable, ledger);
      const unkeyedAnswers = clients.reduce((sum, client) => sum + client.unkeyed.ids.length, 0);
      await run.eventually(() => count(run.predictRecords(steady), (record) => record['status'] === 200 && record['idempotencyKey'] === undefined) >= unkeyedAnswers);
      await run.settled(clients.flatMap((client) => client.keyed.filter((outcome) => outcome.ok).map((outcome) => outcome.key)));
      await expectEvidence(run, { clients, steady, live, ledger, ledgers, database, predictorSchema, ledgerSchema, settled });
    } finally {
      await ledger.close();
    }

    const outbox = await database.query<{ seq: string; sent_at: string | null }>(`SELECT seq, sent_at FROM "${predictorSchema}".usage_outbox WHERE seq = ANY($1::bigint[])`, [[...held]]);
    const publishedEvents = (published?.['events'] as number | undefined) ?? 0;
    run.expect('relay killed between publish and mark: rows it held', `${held.size} (its log: ${publishedEvents} events acked, unmarked)`, `> 0, = the log's`, publishedEvents > 0 && held.size === publishedEvents);
    const republished = count(outbox.rows, (row) => row.sent_at !== null && Number(row.sent_at) >= killedAt);
    run.expect('those rows published again and marked sent by another relay', `${republished}/${held.size}`, 'all', held.size > 0 && republished === held.size);
    const [storedCopies, outboxEvents] = await Promise.all([probe.messages(), database.query<{ n: string }>(`SELECT count(*) AS n FROM "${predictorSchema}".usage_outbox`)]);
    run.expect('copies stored by the broker', `${storedCopies} for ${outboxEvents.rows[0]!.n} events`, 'one per event (duplicate window)', storedCopies === Number(outboxEvents.rows[0]!.n));

    const duringOutage = clients.reduce(
      (sum, client) =>
        sum +
        count(client.keyed, (outcome) => outcome.ok && outcome.startedAt >= outageWindow.from && outcome.startedAt < outageWindow.to) +
        count(client.unkeyed.startedAt, (at) => at >= outageWindow.from && at < outageWindow.to),
      0,
    );
    run.expect('outbox backlog while the broker was down (max of /readyz usage.backlog)', outageBacklog, '> 0', outageBacklog > 0);
    run.expect('successes started while the broker was down', duringOutage, '> 0', duringOutage > 0);

    // Whoever gets the event next (the replacement or the surviving ledger), after the crash, must find it in the inbox.
    const redelivered = ledgers
      .flatMap((one) => one.process.records)
      .filter((record) => record.msg === 'usage event recorded' && record['eventId'] === unacked?.['id'] && Date.parse(record['time'] as string) >= ledgerKilledAt);
    const duplicates = count(ledgers.flatMap((one) => one.process.records), (record) => record.msg === 'usage event recorded' && record['outcome'] === 'duplicate');
    run.expect('consumer killed after the commit, before the ack', unacked ? `event ${String(unacked['id'])}` : 'no such moment', 'seen', unacked !== undefined);
    run.expect(
      'that event delivered again after the crash',
      redelivered.length === 0 ? 'not seen' : redelivered.map((record) => `${String(record['outcome'])} (delivery ${String(record['deliveries'])})`).join(', '),
      'duplicate each time (the inbox had it)',
      redelivered.length > 0 && redelivered.every((record) => record['outcome'] === 'duplicate'),
    );
    run.expect('deliveries the inbox absorbed as duplicates (all ledgers)', duplicates, '≥ 1', duplicates >= 1);
  },
};

/** Per client: the successes, the executions the predictors recorded, and the ledger, compared count by count and id by id. */
async function expectEvidence(
  run: ScenarioRun,
  context: {
    clients: ClientTraffic[];
    steady: RunningPredictor;
    live: RunningPredictor[];
    ledger: PostgresUsageLedger;
    ledgers: RunningUsageLedger[];
    database: pg.Client;
    predictorSchema: string;
    ledgerSchema: string;
    settled: boolean;
  },
): Promise<void> {
  const { clients, steady, live, ledger, ledgers, database, predictorSchema, ledgerSchema, settled } = context;
  const completed = await database.query<{ client_id: string; n: string }>(`SELECT client_id, count(*) AS n FROM "${predictorSchema}".idempotency_keys WHERE status = 200 GROUP BY client_id`);
  const records = new Map(completed.rows.map((row) => [row.client_id, Number(row.n)]));
  const report = ledgers.at(-1)!;
  const rows = await Promise.all(
    clients.map(async (client) => {
      const succeededIds = new Set([...client.keyed.flatMap((outcome) => (outcome.ok ? [outcome.predictionId!] : [])), ...client.unkeyed.ids]);
      const attempted = client.keyed.length + client.unkeyed.ids.length + client.unkeyed.failures.length;
      const unkeyedExecuted = count(run.predictRecords(steady), (record) => record['clientId'] === client.clientId && record['status'] === 200 && record['idempotencyKey'] === undefined);
      const executedLines = count(run.predictRecords(), (record) => record['clientId'] === client.clientId && record['idempotency'] === 'executed');
      const keyedRecords = records.get(client.clientId) ?? 0;
      const inbox = await database.query<{ event_id: string }>(`SELECT event_id FROM "${ledgerSchema}".usage_inbox WHERE client_id = $1`, [client.clientId]);
      const ledgerIds = new Set(inbox.rows.map((row) => row.event_id));
      const response = await fetch(`${report.adminUrl}/v1/usage?client=${encodeURIComponent(client.clientId)}`, { headers: { authorization: `Bearer ${DEV_ENV['ADMIN_TOKEN']!}` } });
      const totals = ((await response.json()) as { sum?: { predictions: number } }).sum?.predictions;
      return {
        client,
        succeeded: succeededIds.size,
        attempted,
        firstFailure: client.keyed.find((outcome) => !outcome.ok)?.error?.message ?? client.unkeyed.failures[0],
        executions: keyedRecords + unkeyedExecuted,
        keyedRecords,
        executedLines,
        events: await ledger.eventCount(client.clientId),
        totals,
        lost: count(succeededIds, (id) => !ledgerIds.has(id)),
        extra: count(ledgerIds, (id) => !succeededIds.has(id)),
      };
    }),
  );
  const perClient = (value: (row: (typeof rows)[number]) => string | number) => rows.map((row) => `${row.client.clientId} ${value(row)}`).join(', ');
  const twice = [...run.executionsPerKey().values()].filter((times) => times > 1).length;
  const backlogs = await Promise.all(live.map((predictor) => outboxBacklog(predictor).catch(() => -1)));

  run.expect(
    'logical predictions succeeded (keyed + unkeyed)',
    perClient((row) => `${row.succeeded}/${row.attempted}${row.firstFailure ? ` (first failure: ${row.firstFailure})` : ''}`),
    'all',
    rows.every((row) => row.succeeded === row.attempted && row.attempted > 0),
  );
  run.expect(
    'ledger events = executions = successes',
    perClient((row) => `${row.events} = ${row.executions} = ${row.succeeded}`),
    'equal, per client',
    rows.every((row) => row.events === row.executions && row.executions === row.succeeded),
  );
  run.expect('successes without their event in the ledger (lost)', perClient((row) => row.lost), '0', rows.every((row) => row.lost === 0));
  run.expect('ledger events no success accounts for (counted twice)', perClient((row) => row.extra), '0', rows.every((row) => row.extra === 0));
  run.expect('keys executed more than once (predictor logs)', twice, '0', twice === 0);
  run.expect('ledger totals (GET /v1/usage) = inbox events', perClient((row) => `${String(row.totals)} = ${row.events}`), 'equal', rows.every((row) => row.totals === row.events));
  run.expect(
    "'executed' log lines / completed idempotency records",
    perClient((row) => `${row.executedLines}/${row.keyedRecords}`),
    `equal, or up to ${WORKERS_AT_KILLED_PREDICTOR} fewer lines in all (died with the killed predictor)`,
    rows.every((row) => row.executedLines <= row.keyedRecords) && rows.reduce((sum, row) => sum + row.keyedRecords - row.executedLines, 0) <= WORKERS_AT_KILLED_PREDICTOR,
  );
  run.expect('outboxes empty and consumer quiet after the traffic', `${settled ? 'yes' : 'no'}; backlog ${backlogs.join(', ')}`, `yes, within ${SETTLE_TIMEOUT_MS / 1000} s; 0`, settled && backlogs.every((backlog) => backlog === 0));
}

/** Requests without Idempotency-Key, one after another, straight to `url` (no lossy proxy: an unkeyed answer lost would be a prediction nobody can count). */
async function unkeyedTraffic(run: ScenarioRun, tokens: TokenSource, url: string, durationMs: number, into: ClientTraffic['unkeyed']): Promise<void> {
  const until = run.elapsed() + durationMs;
  while (run.elapsed() < until) {
    const startedAt = run.elapsed();
    try {
      const token = await tokens.getToken();
      const response = await fetch(`${url}/v1/predict`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token.value}`, 'content-type': 'application/json' },
        body: JSON.stringify({ inputs: [[5.9, 3.0, 5.1, 1.8]] }),
      });
      const body = (await response.json()) as { id?: string };
      if (response.status === 200 && body.id) {
        into.ids.push(body.id);
        into.startedAt.push(startedAt);
      } else into.failures.push(`unkeyed: ${response.status}`);
    } catch (error) {
      into.failures.push(`unkeyed: ${(error as Error).message}`);
    }
    await sleep(UNKEYED_PAUSE_MS);
  }
}

/** The unsent events in a predictor's outbox (`/readyz` `usage.backlog`). */
async function outboxBacklog(predictor: RunningPredictor): Promise<number> {
  const response = await fetch(`${predictor.url}/readyz`);
  const body = (await response.json()) as { usage?: { backlog: number } };
  if (body.usage === undefined) throw new Error(`/readyz of ${predictor.url} answered ${response.status} without usage`);
  return body.usage.backlog;
}

/** Outbox rows a relay holds right now (locked, unsent): every unsent row but those this session can lock. */
async function heldOutboxRows(database: pg.Client, schema: string): Promise<Set<string>> {
  const outbox = `"${schema}".usage_outbox`;
  await database.query('BEGIN');
  try {
    const unsent = await database.query<{ seq: string }>(`SELECT seq FROM ${outbox} WHERE sent_at IS NULL`);
    const free = new Set((await database.query<{ seq: string }>(`SELECT seq FROM ${outbox} WHERE sent_at IS NULL FOR UPDATE SKIP LOCKED`)).rows.map((row) => row.seq));
    return new Set(unsent.rows.map((row) => row.seq).filter((seq) => !free.has(seq)));
  } finally {
    await database.query('ROLLBACK');
  }
}

/**
 * Resolves true once, three looks in a row (250 ms apart), every predictor's outbox is empty,
 * the consumer has nothing pending or unacked, and the ledger's count has not moved; false at the deadline.
 */
async function waitUntilQuiet(predictors: RunningPredictor[], probe: UsageStreamProbe, durable: string, ledger: PostgresUsageLedger): Promise<boolean> {
  const deadline = performance.now() + SETTLE_TIMEOUT_MS;
  let quietLooks = 0;
  let lastCount = -1;
  while (performance.now() < deadline) {
    const [backlogs, consumer, events] = await Promise.all([
      Promise.all(predictors.map((predictor) => outboxBacklog(predictor).catch(() => -1))),
      probe.consumerBacklog(durable).catch(() => undefined),
      ledger.eventCount(),
    ]);
    const quiet = backlogs.every((backlog) => backlog === 0) && consumer?.pending === 0 && consumer.ackPending === 0 && events === lastCount;
    quietLooks = quiet ? quietLooks + 1 : 0;
    lastCount = events;
    if (quietLooks >= 3) return true;
    await sleep(250);
  }
  return false;
}

const count = <T>(items: Iterable<T>, predicate: (item: T) => boolean) => [...items].filter(predicate).length;

function intersection<T>(one: Set<T>, other: Set<T>): Set<T> {
  return new Set([...one].filter((item) => other.has(item)));
}
