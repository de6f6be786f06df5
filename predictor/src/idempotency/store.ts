/**
 * Idempotency keys (draft-ietf-httpapi-idempotency-key-header): what a store must
 * guarantee, whatever keeps the records (memory, SQLite, PostgreSQL).
 */

import type { UsageEvent } from '@m2m/common';
import { DEFAULT_OUTBOX_RETENTION_MS, type UsageOutbox } from '../usage/outbox.js';

export interface StoredResponse {
  status: number;
  /** Only headers worth replaying, lower-case names, e.g. content-type. */
  headers: Record<string, string>;
  /** Exact body text, replayed byte-identically. */
  body: string;
}

export type ClaimResult =
  /**
   * First use (or a key whose holder's lease ran out): the caller executes, holding the lease
   * that `token` fences. Tokens only grow, on every claim and take-over, so a holder that lost
   * its lease can no longer renew, complete or release it.
   */
  | { outcome: 'claimed'; token: number }
  /** Same fingerprint, completed. */
  | { outcome: 'replay'; response: StoredResponse }
  /** Same fingerprint, another request holds the lease (integer >= 1, from its remaining time, capped at the lease). */
  | { outcome: 'in-flight'; retryAfterSeconds: number }
  /** Same key, different fingerprint (whether completed or in flight). */
  | { outcome: 'mismatch' };

/** What a lease holder learns from `renew`, `complete` or `release`: `lost` when its token is no longer the record's. */
export type LeaseOutcome = 'ok' | 'lost';

/** Every store is also the usage outbox: a completion and its usage event commit together. */
export interface IdempotencyStore extends UsageOutbox {
  /** How long a claim holds without renewal (ms); its holder renews well inside it. */
  readonly leaseMs: number;
  /** Atomic: of N concurrent claims of one (clientId, key), exactly one gets 'claimed' until it completes, releases or its lease runs out unrenewed. */
  claim(clientId: string, key: string, fingerprint: string): Promise<ClaimResult>;
  /** Extends the lease by the lease duration from now, if `token` still holds it. */
  renew(clientId: string, key: string, token: number): Promise<LeaseOutcome>;
  /**
   * Stores the response for the retention period, if `token` still holds the lease; one
   * compare-and-set. `usage` goes into the outbox in the same transaction, or not at all.
   */
  complete(clientId: string, key: string, token: number, response: StoredResponse, usage?: UsageEvent): Promise<LeaseOutcome>;
  /** Forgets the claim without storing anything (validation failure, 429, 5xx) so the key can be retried, if `token` still holds it. */
  release(clientId: string, key: string, token: number): Promise<LeaseOutcome>;
  /** Deletes expired records, at most `batchSize` per call; returns how many. */
  purgeExpired(batchSize?: number): Promise<number>;
  /** Expired records still present (not purged yet). */
  countExpired(): Promise<number>;
  /** Readiness: true if the store can be used. */
  healthy(): Promise<boolean>;
  close(): Promise<void>;
}

export interface IdempotencyStoreOptions {
  /** How long a completed response is kept (ms). Default 24 h. */
  retentionMs?: number;
  /** How long a sent usage event stays in the outbox (ms). Default 1 h. */
  outboxRetentionMs?: number;
  /**
   * How long a claim blocks others without being renewed (ms). The holder renews it while it
   * runs, so this bounds how soon a crashed holder's key can be taken over. Default 5 000.
   */
  leaseMs?: number;
  now?: () => number;
}

export const DEFAULT_RETENTION_MS = 24 * 60 * 60 * 1000;
export const DEFAULT_LEASE_MS = 5_000;
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
  outboxRetentionMs: number;
  leaseMs: number;
  now: () => number;
}

export function resolveStoreOptions(options: IdempotencyStoreOptions): ResolvedStoreOptions {
  const { retentionMs = DEFAULT_RETENTION_MS, outboxRetentionMs = DEFAULT_OUTBOX_RETENTION_MS, leaseMs = DEFAULT_LEASE_MS, now = Date.now } = options;
  assertPositive('retentionMs', retentionMs);
  assertPositive('outboxRetentionMs', outboxRetentionMs);
  assertPositive('leaseMs', leaseMs);
  return { retentionMs, outboxRetentionMs, leaseMs, now };
}

export function resolveBatchSize(batchSize = DEFAULT_PURGE_BATCH_SIZE): number {
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
  return batchSize;
}

function assertPositive(name: string, value: number): void {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a positive number of milliseconds, got ${value}`);
}

/**
 * When a claim's record expires, from its claim or its latest renewal. A claim outlives its
 * lease even if retention is configured shorter, so purging never frees a key whose request
 * may still be running.
 */
export function claimExpiresAt(now: number, options: ResolvedStoreOptions): number {
  return now + Math.max(options.retentionMs, options.leaseMs);
}

/** The part of a record that decides a claim; `response` is undefined while the claim is in flight. */
export interface RecordState {
  fingerprint: string;
  /** Until when (ms since epoch) an in-flight claim's lease blocks others. */
  lockedUntil: number;
  response: StoredResponse | undefined;
}

/** 'abandoned': an in-flight claim of the same request whose lease ran out; the caller may take it over. */
export type ExistingRecordVerdict = Exclude<ClaimResult, { outcome: 'claimed' }> | { outcome: 'abandoned' };

/** The decision every store makes when a claim finds an unexpired record for its (clientId, key). */
export function judgeExistingRecord(record: RecordState, fingerprint: string, now: number, leaseMs: number): ExistingRecordVerdict {
  // A different request under a used key is the client's error even once the lease ran out:
  // taking it over would execute two different requests under one key.
  if (record.fingerprint !== fingerprint) return { outcome: 'mismatch' };
  if (record.response) return { outcome: 'replay', response: copyResponse(record.response) };
  if (record.lockedUntil <= now) return { outcome: 'abandoned' };
  return { outcome: 'in-flight', retryAfterSeconds: retryAfterSeconds(record.lockedUntil - now, leaseMs) };
}

/** Whole seconds until the lease runs out, at least 1, and never more than the lease (if clocks disagree). */
export function retryAfterSeconds(remainingMs: number, leaseMs: number): number {
  const capSeconds = Math.max(1, Math.ceil(leaseMs / 1000));
  return Math.min(capSeconds, Math.max(1, Math.ceil(remainingMs / 1000)));
}

/** Callers may decorate a replayed response (e.g. add `idempotent-replayed`); they must not change what is stored. */
export function copyResponse(response: StoredResponse): StoredResponse {
  return { status: response.status, headers: { ...response.headers }, body: response.body };
}
