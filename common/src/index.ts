export { ConfigError, EnvReader, SQL_IDENTIFIER, type Env } from './env.js';
export { createLogger, LOG_LEVELS, REDACTED_PATHS, redactUrl, type Logger, type LogLevel } from './logger.js';
export {
  createShutdown,
  DEFAULT_SHUTDOWN_GRACE_MS,
  REPEATED_SIGNAL_WINDOW_MS,
  SHUTDOWN_CLOSE_MARGIN_MS,
  SHUTDOWN_GRACE_RANGE,
  shutdownOnSignals,
  type Shutdown,
  type ShutdownOptions,
} from './shutdown.js';
export {
  checkUsageEvent,
  decodeUsageEvent,
  encodeUsageEvent,
  MalformedUsageEvent,
  USAGE_EVENT_TYPE,
  USAGE_SUBJECT_PREFIX,
  usageDay,
  usageSubject,
  type UsageEvent,
} from './usage-event.js';
export { describeConnectError, migratePostgres, openMigratedPool, postgresPoolConfig, quotePostgresIdentifier, type MigratablePool, type MigrationClient, type MigrationPlan, type PostgresPoolOptions } from './pg-migrations.js';
export { migrateSqlite, type SqliteMigrationDatabase } from './sqlite-migrations.js';
