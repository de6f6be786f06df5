import { join } from 'node:path';
import type { Logger } from '@m2m/common';
import { PostgresUsageLedger, SqliteUsageLedger, type UsageLedger } from '@m2m/usage';
import type { PredictorConfig } from '../config.js';
import type { Metrics } from '../http/metrics.js';
import type { UsageOutbox } from './outbox.js';
import { UsageRelay, type UsageDelivery } from './relay.js';

export interface UsagePipeline {
  relay: UsageRelay;
  /** The ledger in this process (no NATS_URL), for its admin reads; undefined when a consumer elsewhere keeps it. */
  ledger: UsageLedger | undefined;
  close(): Promise<void>;
}

/**
 * Where the outbox's events go: to NATS JetStream when NATS_URL is set (the usage-ledger
 * process consumes them), else straight into a ledger in this process, next to the
 * idempotency store (`usage.db` beside `idempotency.db`, or the same PostgreSQL schema).
 */
export async function openUsagePipeline(config: PredictorConfig, outbox: UsageOutbox, deps: { logger: Logger; metrics: Metrics }): Promise<UsagePipeline> {
  const ledger: SqliteUsageLedger | PostgresUsageLedger =
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
