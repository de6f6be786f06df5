import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { serve } from '@hono/node-server';
import { ConfigError, createLogger, shutdownOnSignals, type UsageEvent } from '@m2m/common';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Hono } from 'hono';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { buildUsageAdminApp } from './admin-app.js';
import { loadUsageLedgerConfig, type UsageLedgerConfig } from './config.js';
import { connectNats, type NatsHandle } from './jetstream/connection.js';
import { NatsUnavailable } from './jetstream/errors.js';
import { newUsageConsumerStats, runUsageConsumer } from './jetstream/consumer.js';
import { ensureUsageStream } from './jetstream/stream.js';
import { PostgresUsageLedger, UsageDatabaseUnreachable } from './ledger-postgres.js';
import { SqliteUsageLedger } from './ledger-sqlite.js';
import type { UsageLedger } from './ledger.js';

// The usage-ledger process (scale-out): consumes usage events from JetStream into the ledger,
// and serves the report. Exit 2: configuration; exit 1: the broker or database unreachable at start.
let config: UsageLedgerConfig;
try {
  config = loadUsageLedgerConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`usage-ledger: ${error.message}\n`);
  process.exit(2);
}
const logger = createLogger('usage-ledger', config.logLevel);

let ledger: UsageLedger;
let nats: NatsHandle;
try {
  ledger = config.databaseUrl
    ? await PostgresUsageLedger.open({ connectionString: config.databaseUrl, schema: config.databaseSchema })
    : SqliteUsageLedger.open(join(config.dataDir, 'usage.db'));
  nats = await connectNats({ url: config.natsUrl, name: 'usage-ledger', logger });
  await ensureUsageStream(await jetstreamManager(nats.nc), { stream: config.stream, subjectPrefix: config.subjectPrefix });
} catch (error) {
  if (error instanceof UsageDatabaseUnreachable || error instanceof NatsUnavailable) {
    process.stderr.write(`usage-ledger: ${error.message}\n`);
    process.exit(1);
  }
  throw error;
}

// With USAGE_CONSUMER_PAUSE_BEFORE_ACK_MS (rehearsals), a window between the commit and the ack, for a crash.
const recording = config.pauseBeforeAckMs === 0 ? ledger : {
  async record(event: UsageEvent) {
    const outcome = await ledger.record(event);
    logger.warn({ event: 'usage.recorded_unacked', id: event.id, pauseMs: config.pauseBeforeAckMs }, 'rehearsal: committed, not yet acked');
    await sleep(config.pauseBeforeAckMs);
    return outcome;
  },
};

const stopping = new AbortController();
const stats = newUsageConsumerStats();
const consuming = runUsageConsumer({
  js: jetstream(nats.nc),
  jsm: await jetstreamManager(nats.nc),
  stream: config.stream,
  durable: config.durable,
  ackWaitMs: config.ackWaitMs,
  ledger: recording,
  logger,
  signal: stopping.signal,
  stats,
});

// Without ADMIN_TOKEN the report is off and only the health check answers.
const admin = config.adminToken ? buildUsageAdminApp({ ledger, adminToken: config.adminToken, logger }) : new Hono().get('/healthz', (c) => c.json({ status: 'ok' }));
const server = await new Promise<Server>((resolve, reject) => {
  const created = serve({ fetch: admin.fetch, port: config.port, hostname: config.host }, () => resolve(created as Server)) as Server;
  created.once('error', reject);
});

shutdownOnSignals({
  listeners: { http: server },
  onStart: () => stopping.abort(),
  closeSteps: {
    consumer: async () => {
      await consuming;
      logger.info({ event: 'usage.consumer_stopped', ...stats }, 'consumer stopped');
      await nats.close();
      await ledger.close();
    },
  },
  logger,
  graceMs: config.shutdownGraceMs,
});
// Announced last: whoever waits for this line (a supervisor, a test) may signal at once.
logger.info({ port: (server.address() as AddressInfo).port, stream: config.stream, durable: config.durable, ledger: config.databaseUrl ? 'postgres' : 'sqlite', report: config.adminToken !== undefined }, 'listening');
