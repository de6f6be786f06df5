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
export { SqliteUsageLedger, UsageLedgerNotFound, type SqliteUsageLedgerOptions } from './ledger-sqlite.js';
export { PostgresUsageLedger, UsageDatabaseUnreachable, type PostgresUsageLedgerOptions } from './ledger-postgres.js';
export { formatUsageTable, usageReport, type UsageReport } from './report.js';
export { buildUsageAdminApp, type UsageAdminDeps } from './admin-app.js';
