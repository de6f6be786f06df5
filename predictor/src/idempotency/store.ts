/**
 * Idempotency keys (draft-ietf-httpapi-idempotency-key-header): what a store must
 * guarantee, whatever keeps the records (memory, SQLite, later PostgreSQL).
 */

export interface StoredResponse {
  status: number;
  /** Only headers worth replaying, lower-case names, e.g. content-type. */
  headers: Record<string, string>;
  /** Exact body text, replayed byte-identically. */
  body: string;
}

export type ClaimResult =
  /** First use (or a crashed claim whose lock expired): the caller executes. */
  | { outcome: 'claimed' }
  /** Same fingerprint, completed. */
  | { outcome: 'replay'; response: StoredResponse }
  /** Same fingerprint, another request holds the claim (integer >= 1, from the remaining lock time, capped at the lock timeout). */
  | { outcome: 'in-flight'; retryAfterSeconds: number }
  /** Same key, different fingerprint (whether completed or in flight). */
  | { outcome: 'mismatch' };

export interface IdempotencyStore {
  /** Atomic: of N concurrent claims of one (clientId, key), exactly one gets 'claimed' until it completes, releases or its lock expires. */
  claim(clientId: string, key: string, fingerprint: string): Promise<ClaimResult>;
  /** Stores the response for the retention period; only the holder of the claim calls it. */
  complete(clientId: string, key: string, fingerprint: string, response: StoredResponse): Promise<void>;
  /** Forgets a claim without storing anything (validation failure, 429, 5xx) so the key can be retried. */
  release(clientId: string, key: string, fingerprint: string): Promise<void>;
  /** Deletes expired records, at most `batchSize` per call; returns how many. */
  purgeExpired(batchSize?: number): Promise<number>;
  /** Readiness: true if the store can be used. */
  healthy(): Promise<boolean>;
  close(): Promise<void>;
}

export interface IdempotencyStoreOptions {
  /** How long a completed response is kept (ms). Default 24 h. */
  retentionMs?: number;
  /** How long a claim blocks others before a retry may take it over, e.g. after a crash (ms). Default 15 000. */
  lockTimeoutMs?: number;
  now?: () => number;
}

export const DEFAULT_RETENTION_MS = 24 * 60 * 60 * 1000;
export const DEFAULT_LOCK_TIMEOUT_MS = 15_000;
/** Records deleted by one `purgeExpired()` call when no batch size is given. */
export const DEFAULT_PURGE_BATCH_SIZE = 1_000;

/** The store was used after `close()`. */
export class IdempotencyStoreClosed extends Error {
  override name = 'IdempotencyStoreClosed';
  constructor() {
    super('The idempotency store is closed.');
  }
}

/** The database was migrated by a newer predictor whose schema this one does not know. */
export class UnsupportedIdempotencySchema extends Error {
  override name = 'UnsupportedIdempotencySchema';
  constructor(readonly found: number, readonly supported: number) {
    super(`The idempotency database has schema version ${found}; this predictor supports up to ${supported}.`);
  }
}

export interface ResolvedStoreOptions {
  retentionMs: number;
  lockTimeoutMs: number;
  now: () => number;
}

export function resolveStoreOptions(options: IdempotencyStoreOptions): ResolvedStoreOptions {
  const { retentionMs = DEFAULT_RETENTION_MS, lockTimeoutMs = DEFAULT_LOCK_TIMEOUT_MS, now = Date.now } = options;
  assertPositive('retentionMs', retentionMs);
  assertPositive('lockTimeoutMs', lockTimeoutMs);
  return { retentionMs, lockTimeoutMs, now };
}

export function resolveBatchSize(batchSize = DEFAULT_PURGE_BATCH_SIZE): number {
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
  return batchSize;
}

function assertPositive(name: string, value: number): void {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a positive number of milliseconds, got ${value}`);
}

/**
 * When a new claim's record expires. A claim outlives its lock even if retention is
 * configured shorter, so purging never frees a key whose request may still be running.
 */
export function claimExpiresAt(now: number, options: ResolvedStoreOptions): number {
  return now + Math.max(options.retentionMs, options.lockTimeoutMs);
}

/** The part of a record that decides a claim; `response` is undefined while the claim is in flight. */
export interface RecordState {
  fingerprint: string;
  /** Until when (ms since epoch) an in-flight claim blocks others. */
  lockedUntil: number;
  response: StoredResponse | undefined;
}

/** 'abandoned': an in-flight claim of the same request whose lock expired; the caller may take it over. */
export type ExistingRecordVerdict = Exclude<ClaimResult, { outcome: 'claimed' }> | { outcome: 'abandoned' };

/** The decision every store makes when a claim finds an unexpired record for its (clientId, key). */
export function judgeExistingRecord(record: RecordState, fingerprint: string, now: number, lockTimeoutMs: number): ExistingRecordVerdict {
  // A different request under a used key is the client's error even once the lock expired:
  // taking it over would execute two different requests under one key.
  if (record.fingerprint !== fingerprint) return { outcome: 'mismatch' };
  if (record.response) return { outcome: 'replay', response: copyResponse(record.response) };
  if (record.lockedUntil <= now) return { outcome: 'abandoned' };
  return { outcome: 'in-flight', retryAfterSeconds: retryAfterSeconds(record.lockedUntil - now, lockTimeoutMs) };
}

/** Whole seconds until the lock expires, at least 1, and never more than the lock timeout (if clocks disagree). */
export function retryAfterSeconds(remainingMs: number, lockTimeoutMs: number): number {
  const capSeconds = Math.max(1, Math.ceil(lockTimeoutMs / 1000));
  return Math.min(capSeconds, Math.max(1, Math.ceil(remainingMs / 1000)));
}

/** Callers may decorate a replayed response (e.g. add `idempotent-replayed`); they must not change what is stored. */
export function copyResponse(response: StoredResponse): StoredResponse {
  return { status: response.status, headers: { ...response.headers }, body: response.body };
}
