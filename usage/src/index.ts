// The usage pipeline's public surface, filled in as its modules land.
export {};
export {
  checkUsageFilter,
  InvalidUsageFilter,
  isUsageDay,
  UnsupportedUsageSchema,
  UsageLedgerClosed,
  UsageTotalOverflow,
  type RecordOutcome,
  type UsageFilter,
  type UsageLedger,
  type UsageTotal,
} from './ledger.js';
export { SqliteLedgerImport, SqliteUsageLedger, UsageLedgerNotFound, type SqliteUsageLedgerOptions } from './ledger-sqlite.js';
export { PostgresUsageLedger, UsageDatabaseUnreachable, type PostgresUsageLedgerOptions } from './ledger-postgres.js';
export { formatUsageTable, usageReport, type UsageReport } from './report.js';
export { buildUsageAdminApp, type UsageAdminDeps } from './admin-app.js';
export { connectNats, type NatsConnectOptions, type NatsHandle } from './jetstream/connection.js';
export { NatsUnavailable, UsageConsumerConnectionClosed, UsagePublishFailed, UsageStreamConflict, type PublishFailureReason } from './jetstream/errors.js';
export { JetStreamUsagePublisher, type JetStreamUsagePublisherOptions, type PublishBatchResult, type UsagePubAck } from './jetstream/publisher.js';
export {
  DEFAULT_DUPLICATE_WINDOW_MS,
  DEFAULT_USAGE_MAX_AGE_MS,
  ensureUsageStream,
  USAGE_CONSUMER_DURABLE,
  USAGE_STREAM,
  usageStreamConfig,
  usageSubjectIn,
  type UsageStreamNames,
  type UsageStreamOptions,
} from './jetstream/stream.js';
export {
  ensureUsageConsumer,
  newUsageConsumerStats,
  runUsageConsumer,
  type UsageConsumerConfig,
  type UsageConsumerOptions,
  type UsageConsumerStats,
} from './jetstream/consumer.js';
export { JetStreamUsageSink, type JetStreamUsageSinkOptions } from './jetstream/sink.js';
