import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createLogger, encodeUsageEvent, redactUrl, USAGE_EVENT_TYPE, type UsageEvent } from '@m2m/common';
import { connectNats, ensureUsageStream, JetStreamUsageSink, PostgresUsageLedger, SqliteLedgerImport, SqliteUsageLedger, type NatsHandle, type UsageLedger } from '@m2m/usage';
import { jetstreamManager } from '@nats-io/jetstream';
import pg from 'pg';
import { createMetrics } from '../../predictor/src/http/metrics.js';
import { PostgresIdempotencyStore } from '../../predictor/src/idempotency/postgres.js';
import { SqliteIdempotencyStore } from '../../predictor/src/idempotency/sqlite.js';
import { newPredictionId } from '../../predictor/src/predict/prediction-id.js';
import type { UsageOutbox } from '../../predictor/src/usage/outbox.js';
import { UsageRelay, type UsageDelivery } from '../../predictor/src/usage/relay.js';
import { SqliteOutboxToLedger } from '../../predictor/src/usage/sql-relay.js';

// The relay's throughput: an outbox filled with N events (not measured), then the real
// UsageRelay with its real delivery, timed from its start until the ledger holds all N. Two
// paths: the embedded default (SQLite outbox → ledger in the same process, as the predictor
// runs it without NATS_URL) and the scale-out one (PostgreSQL outbox → JetStream → the
// usage-ledger process's consumer → PostgreSQL ledger). The relay runs in the caller's process.

/** Events per second from outbox to ledger that the issue asks for. */
export const RELAY_TARGET_EVENTS_PER_SECOND = 5_000;

export interface RelayThroughput {
  path: string;
  skipped: false;
  events: number;
  /** Filling the outbox through `append` (not part of the measurement), in s. */
  fillSeconds: number;
  /** From the relay's start until the outbox had nothing unsent, in s. */
  drainedSeconds: number;
  /** From the relay's start until the ledger held every event, in s. */
  seconds: number;
  /** `events / seconds`: outbox to ledger, end to end. */
  eventsPerSecond: number;
  meetsTarget: boolean;
}

export interface RelayThroughputSkipped {
  path: string;
  skipped: true;
  reason: string;
}

export const SQLITE_PATH = 'SQLite outbox → in-process SQLite ledger';
export const JETSTREAM_PATH = 'PostgreSQL outbox → JetStream → usage-ledger → PostgreSQL ledger';

/** Clients the events are spread over, so the ledger's daily totals see several rows, as in use. */
const CLIENTS = 20;
/** Rows per INSERT while filling a PostgreSQL outbox. */
const FILL_BATCH = 5_000;
/** How often the ledger is counted while the relay runs (ms). */
const POLL_MS = 20;
/** A path that has not finished by then has failed (ms). */
const DEADLINE_MS = 120_000;

const silent = createLogger('bench', 'silent');

function usageEvents(count: number): UsageEvent[] {
  const occurredAt = new Date().toISOString();
  return Array.from({ length: count }, (_, index) => ({
    id: newPredictionId(),
    type: USAGE_EVENT_TYPE,
    clientId: `bench-client-${index % CLIENTS}`,
    plan: 'standard',
    credential: { method: 'bearer-jwt', id: 'bench-key' },
    rows: 1 + (index % 3),
    modelId: 'iris-v1',
    idempotencyKey: index % 10 === 0 ? randomUUID() : undefined,
    occurredAt,
  }));
}

/** Through the store's own `append`, one event after the other (in SQLite each is a commit of a few µs). */
async function fillByAppend(outbox: UsageOutbox, events: readonly UsageEvent[]): Promise<number> {
  const started = performance.now();
  for (const event of events) await outbox.append(event);
  return (performance.now() - started) / 1000;
}

/**
 * Straight into the outbox table, FILL_BATCH rows per statement: `append` commits each event
 * alone, and a PostgreSQL commit waits for its WAL flush (about 2 ms here), so filling 50 000
 * that way would take longer than relaying them. The rows are what `append` writes.
 */
async function fillPostgresOutbox(databaseUrl: string, schema: string, events: readonly UsageEvent[]): Promise<number> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const started = performance.now();
    for (let from = 0; from < events.length; from += FILL_BATCH) {
      const batch = events.slice(from, from + FILL_BATCH).map(encodeUsageEvent);
      await client.query(`INSERT INTO "${schema}".usage_outbox (event, created_at) SELECT event, $2 FROM unnest($1::text[]) WITH ORDINALITY AS e (event, n) ORDER BY n`, [batch, Date.now()]);
    }
    return (performance.now() - started) / 1000;
  } finally {
    await client.end();
  }
}

/**
 * Runs the relay over a filled outbox until `ledger` holds every event; checks that the ledger
 * counted each exactly once. Rejects if that takes longer than DEADLINE_MS.
 */
async function timeRelay(path: string, outbox: UsageOutbox, deliver: UsageDelivery, sink: string, ledger: UsageLedger, events: readonly UsageEvent[], fillSeconds: number): Promise<RelayThroughput> {
  const relay = new UsageRelay({ outbox, deliver, sink, logger: silent, metrics: createMetrics({ collectProcessMetrics: false }) });
  const started = performance.now();
  let drainedAt: number | undefined;
  relay.start();
  try {
    for (;;) {
      if (drainedAt === undefined && (await outbox.backlog()).count === 0) drainedAt = performance.now();
      if (drainedAt !== undefined && (await ledger.eventCount()) >= events.length) break;
      if (performance.now() - started > DEADLINE_MS) throw new Error(`${path}: the ledger did not receive ${events.length} events within ${DEADLINE_MS / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } finally {
    await relay.stop();
  }
  const seconds = (performance.now() - started) / 1000;
  const totals = await ledger.report();
  const predictions = totals.reduce((sum, total) => sum + total.predictions, 0);
  const rows = totals.reduce((sum, total) => sum + total.rows, 0);
  const expectedRows = events.reduce((sum, event) => sum + event.rows, 0);
  if (predictions !== events.length || rows !== expectedRows) {
    throw new Error(`${path}: the ledger counted ${predictions} predictions and ${rows} rows for ${events.length} events of ${expectedRows} rows`);
  }
  const eventsPerSecond = Math.round(events.length / seconds);
  return {
    path,
    skipped: false,
    events: events.length,
    fillSeconds: round2(fillSeconds),
    drainedSeconds: round2(((drainedAt ?? performance.now()) - started) / 1000),
    seconds: round2(seconds),
    eventsPerSecond,
    meetsTarget: eventsPerSecond >= RELAY_TARGET_EVENTS_PER_SECOND,
  };
}

/** (a) The embedded default: `idempotency.db`'s outbox into `usage.db`, as openUsagePipeline wires it without NATS_URL. */
export async function sqliteRelayThroughput(options: { events: number; dir: string }): Promise<RelayThroughput> {
  const outboxPath = join(options.dir, 'idempotency.db');
  const ledgerPath = join(options.dir, 'usage.db');
  const outbox = SqliteIdempotencyStore.open(outboxPath);
  const ledger = SqliteUsageLedger.open(ledgerPath);
  // As the relay thread moves them (relay-worker.ts): in SQL, through JavaScript for what SQL does not take.
  const ledgerImport = SqliteLedgerImport.open(ledgerPath, outboxPath);
  try {
    const events = usageEvents(options.events);
    const fillSeconds = await fillByAppend(outbox, events);
    const deliver: UsageDelivery = async (batch) => {
      await ledger.recordBatch(batch);
      return new Set(batch.map((event) => event.id));
    };
    return await timeRelay(SQLITE_PATH, new SqliteOutboxToLedger(outbox, ledgerImport), deliver, 'in-process', ledger, events, fillSeconds);
  } finally {
    ledgerImport.close();
    await ledger.close();
    await outbox.close();
  }
}

export interface JetStreamRelayOptions {
  events: number;
  databaseUrl: string;
  natsUrl: string;
  /** Schema of this run (outbox and ledger, as a predictor and the usage-ledger share one), dropped afterwards. */
  schema: string;
  /** Stream of this run (subjects under `bench.<stream>`), deleted afterwards. */
  stream: string;
  /**
   * How to start the usage-ledger process (`node usage-ledger.js`, as deployed): it runs
   * runUsageConsumer with its production settings; `port` is free for its health check.
   */
  usageLedger: { command: string; args: string[]; cwd: string; port: number };
}

/**
 * (b) The scale-out path end to end: the relay publishes through JetStreamUsageSink (what the
 * predictor does with NATS_URL), the usage-ledger process consumes into PostgreSQL. The
 * stream is created first, as the usage-ledger does at start; the ledger is read from here.
 */
export async function jetstreamRelayThroughput(options: JetStreamRelayOptions): Promise<RelayThroughput> {
  const names = { stream: options.stream, subjectPrefix: `bench.${options.stream.toLowerCase()}.usage.predictions` };
  const outbox = await PostgresIdempotencyStore.open({ connectionString: options.databaseUrl, schema: options.schema, clock: 'database' });
  const sink = new JetStreamUsageSink({ url: options.natsUrl, name: 'bench-relay', logger: silent, ...names });
  let ledger: PostgresUsageLedger | undefined;
  let nats: NatsHandle | undefined;
  let stopConsumer = async () => {};
  try {
    ledger = await PostgresUsageLedger.open({ connectionString: options.databaseUrl, schema: options.schema });
    nats = await connectNats({ url: options.natsUrl, name: 'bench-relay-admin', logger: silent });
    await ensureUsageStream(await jetstreamManager(nats.nc), names);
    stopConsumer = await startUsageLedger(options.usageLedger, { NATS_URL: options.natsUrl, DATABASE_URL: options.databaseUrl, DATABASE_SCHEMA: options.schema, USAGE_STREAM: names.stream, USAGE_SUBJECT_PREFIX: names.subjectPrefix });
    const events = usageEvents(options.events);
    const fillSeconds = await fillPostgresOutbox(options.databaseUrl, options.schema, events);
    return await timeRelay(JETSTREAM_PATH, outbox, (batch) => sink.deliver(batch), 'jetstream', ledger, events, fillSeconds);
  } finally {
    await stopConsumer();
    await sink.close();
    if (nats) {
      await (await jetstreamManager(nats.nc)).streams.delete(names.stream).catch(() => {});
      await nats.close();
    }
    await ledger?.close();
    await outbox.close();
    await dropSchema(options.databaseUrl, options.schema);
  }
}

/** Starts the usage-ledger process and waits for its health check; resolves with how to stop it (SIGTERM, then its exit). */
async function startUsageLedger(ledgerProcess: JetStreamRelayOptions['usageLedger'], env: Record<string, string>): Promise<() => Promise<void>> {
  const child = spawn(ledgerProcess.command, ledgerProcess.args, {
    cwd: ledgerProcess.cwd,
    env: { PATH: process.env['PATH'] ?? '', ...env, USAGE_ADMIN_PORT: String(ledgerProcess.port), LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    const status = await fetch(`http://127.0.0.1:${ledgerProcess.port}/healthz`).then((response) => response.status, () => 0);
    if (status === 200) return stop;
    if (Date.now() > deadline || child.exitCode !== null) {
      await stop();
      throw new Error(`the usage-ledger process did not become ready on port ${ledgerProcess.port}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function dropSchema(databaseUrl: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5_000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } catch (error) {
    throw new Error(`could not drop schema ${schema} at ${redactUrl(databaseUrl)}: ${(error as Error).message}`);
  } finally {
    await client.end().catch(() => {});
  }
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}
