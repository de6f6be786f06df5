import { DEFAULT_SHUTDOWN_GRACE_MS, EnvReader, LOG_LEVELS, SHUTDOWN_GRACE_RANGE, type Env, type LogLevel } from '@m2m/common';

/** The usage-ledger process: JetStream in, a ledger (PostgreSQL, or an SQLite file) out, a report over HTTP. */
export interface UsageLedgerConfig {
  natsUrl: string;
  stream: string;
  subjectPrefix: string;
  /** The durable consumer: where the broker keeps this ledger's position. */
  durable: string;
  /** PostgreSQL ledger (shared, the default in scale-out); else the SQLite file below. */
  databaseUrl: string | undefined;
  databaseSchema: string;
  /** Where the SQLite ledger lives without DATABASE_URL. */
  dataDir: string;
  /** GET /v1/usage needs it; without it only /healthz answers. */
  adminToken: string | undefined;
  port: number;
  host: string;
  /** How long the broker waits for an ack before delivering again (ms). */
  ackWaitMs: number;
  /** Rehearsals only: wait this long after the ledger committed an event and before acking it (a crash there redelivers). 0 normally. */
  pauseBeforeAckMs: number;
  shutdownGraceMs: number;
  logLevel: LogLevel;
}

export function loadUsageLedgerConfig(env: Env): UsageLedgerConfig {
  const read = new EnvReader(env);
  return {
    natsUrl: read.serviceUrl('NATS_URL', ['nats:', 'tls:']) ?? 'nats://127.0.0.1:4222',
    stream: read.string('USAGE_STREAM', 'USAGE'),
    subjectPrefix: read.string('USAGE_SUBJECT_PREFIX', 'usage.predictions'),
    durable: read.string('USAGE_CONSUMER', 'usage-ledger'),
    databaseUrl: read.serviceUrl('DATABASE_URL', ['postgres:', 'postgresql:']),
    databaseSchema: read.identifier('DATABASE_SCHEMA', 'public'),
    dataDir: read.string('USAGE_DATA_DIR', '.data/usage'),
    adminToken: read.adminToken(),
    port: read.port('USAGE_ADMIN_PORT', 9002),
    host: read.string('USAGE_ADMIN_HOST', '127.0.0.1'),
    ackWaitMs: read.integer('USAGE_ACK_WAIT_MS', 30_000, { min: 1_000, max: 3_600_000 }),
    pauseBeforeAckMs: read.integer('USAGE_CONSUMER_PAUSE_BEFORE_ACK_MS', 0, { min: 0, max: 600_000 }),
    shutdownGraceMs: read.integer('SHUTDOWN_GRACE_MS', DEFAULT_SHUTDOWN_GRACE_MS, SHUTDOWN_GRACE_RANGE),
    logLevel: read.oneOf('LOG_LEVEL', 'info', LOG_LEVELS),
  };
}
