import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '@m2m/common';
import { JetStreamUsageSink, PostgresUsageLedger, SqliteUsageLedger } from '@m2m/usage';
import type { PredictorConfig } from '../config.js';
import type { Metrics } from '../http/metrics.js';
import { SqliteIdempotencyStore } from '../idempotency/sqlite.js';
import type { UsageOutbox } from './outbox.js';
import { UsageRelay, type UsageDelivery, type UsageRelayControl } from './relay.js';
import { UsageRelayThread } from './relay-thread.js';

/**
 * While the relay thread runs, it checkpoints idempotency.db's WAL after each round (at most
 * 200 ms apart), off the request thread; the request thread's own commits checkpoint only
 * once the WAL holds this many pages (40 MB), a backstop. While the thread is down, they
 * checkpoint at SQLite's default again.
 */
const RELAY_THREAD_CHECKPOINT_BACKSTOP_PAGES = 10_000;
const SQLITE_DEFAULT_CHECKPOINT_PAGES = 1_000;

export interface UsagePipeline {
  relay: UsageRelayControl;
  /** The ledger in this process (no NATS_URL), for its admin reads; undefined when the usage-ledger process keeps it. */
  ledger: SqliteUsageLedger | PostgresUsageLedger | undefined;
  close(): Promise<void>;
}

/**
 * Where the outbox's events go: to NATS JetStream when NATS_URL is set (the usage-ledger
 * process consumes them), else straight into a ledger in this process, next to the
 * idempotency store (`usage.db` beside `idempotency.db`, or the same PostgreSQL schema).
 */
export async function openUsagePipeline(
  config: PredictorConfig,
  outbox: UsageOutbox,
  deps: { logger: Logger; metrics: Metrics; /** The relay thread's module (see UsageRelayThread). */ relayWorker: URL },
): Promise<UsagePipeline> {
  if (config.natsUrl) {
    const sink = new JetStreamUsageSink({ url: config.natsUrl, name: 'predictor', logger: deps.logger, stream: config.usageStream, subjectPrefix: config.usageSubjectPrefix });
    const relay = new UsageRelay({ outbox, deliver: rehearsed(config, deps.logger, (events) => sink.deliver(events)), sink: 'jetstream', logger: deps.logger, metrics: deps.metrics });
    return {
      relay,
      ledger: undefined,
      async close() {
        await relay.stop();
        await sink.close();
      },
    };
  }
  if (config.idempotencyStore === 'sqlite') {
    // Opened here first (its migrations run once), then read by the admin endpoint; the thread records into it.
    const ledgerPath = join(config.dataDir, 'usage.db');
    const ledger = SqliteUsageLedger.open(ledgerPath);
    // The thread checkpoints the outbox's WAL after each round; this thread's commits only past a backstop while it runs.
    const checkpointsElsewhere = (running: boolean) => {
      if (outbox instanceof SqliteIdempotencyStore) outbox.setAutoCheckpoint(running ? RELAY_THREAD_CHECKPOINT_BACKSTOP_PAGES : SQLITE_DEFAULT_CHECKPOINT_PAGES);
    };
    const relay = await UsageRelayThread.start({
      entry: deps.relayWorker,
      outboxPath: join(config.dataDir, 'idempotency.db'),
      ledgerPath,
      logLevel: config.logLevel,
      outbox,
      logger: deps.logger,
      metrics: deps.metrics,
      onRunning: checkpointsElsewhere,
    }).catch(async (error: unknown) => {
      await ledger.close();
      throw error;
    });
    checkpointsElsewhere(true);
    return {
      relay,
      ledger,
      async close() {
        await relay.stop();
        await ledger.close();
      },
    };
  }
  // PostgreSQL (the same schema) or memory (an in-memory outbox, e.g. IDEMPOTENCY_STORE=memory): relayed on this thread.
  const ledger =
    config.idempotencyStore === 'postgres'
      ? await PostgresUsageLedger.open({ connectionString: config.databaseUrl!, schema: config.databaseSchema })
      : SqliteUsageLedger.open(join(config.dataDir, 'usage.db'));
  // Recorded and duplicate alike are acknowledged: a repeat is exactly what the inbox absorbs.
  const deliver: UsageDelivery = async (events) => {
    await ledger.recordBatch(events);
    return new Set(events.map((event) => event.id));
  };
  const relay = new UsageRelay({ outbox, deliver, sink: 'in-process', logger: deps.logger, metrics: deps.metrics });
  return {
    relay,
    ledger,
    async close() {
      await relay.stop();
      await ledger.close();
    },
  };
}

/** With USAGE_RELAY_PAUSE_AFTER_PUBLISH_MS (rehearsals), a window between the broker's acknowledgement and the mark, for a crash. */
function rehearsed(config: PredictorConfig, logger: Logger, deliver: UsageDelivery): UsageDelivery {
  const pauseMs = config.usageRelayPauseAfterPublishMs;
  if (pauseMs === 0) return deliver;
  return async (events) => {
    const acknowledged = await deliver(events);
    if (acknowledged.size > 0) {
      logger.warn({ event: 'usage.published_unmarked', events: acknowledged.size, pauseMs }, 'rehearsal: published, not yet marked sent');
      await sleep(pauseMs);
    }
    return acknowledged;
  };
}
