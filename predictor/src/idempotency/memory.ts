import type { UsageEvent } from '@m2m/common';
import type { OutboxBacklog, RelayRound } from '../usage/outbox.js';
import {
  claimExpiresAt,
  copyResponse,
  IdempotencyStoreClosed,
  judgeExistingRecord,
  resolveBatchSize,
  resolveStoreOptions,
  type ClaimResult,
  type IdempotencyStore,
  type ExistingRecordVerdict,
  type IdempotencyStoreOptions,
  type LeaseOutcome,
  type RecordState,
  type ResolvedStoreOptions,
  type StoredResponse,
} from './store.js';

export interface MemoryIdempotencyStoreOptions extends IdempotencyStoreOptions {
  /**
   * Records kept at most (count). Beyond it the least recently used completed or abandoned
   * records are evicted before their retention ends; claims still in flight never are.
   * Default 100 000.
   */
  maxEntries?: number;
}

interface MemoryRecord extends RecordState {
  /** When the record may be purged (ms since epoch). */
  expiresAt: number;
  /** The fencing token of the claim that wrote it. */
  token: number;
}

/**
 * Idempotency records in this process only: for tests, the bench and a single replica
 * that may forget keys on restart. Every method runs synchronously inside, so a claim is atomic.
 */
export class MemoryIdempotencyStore implements IdempotencyStore {
  readonly #options: ResolvedStoreOptions;
  readonly #maxEntries: number;
  /** Insertion order is recency order: a record is re-inserted whenever it is used. */
  readonly #records = new Map<string, MemoryRecord>();
  /** Usage events in write order; a sent one stays until purged. */
  readonly #outbox = new Map<number, OutboxEntry>();
  #outboxSeq = 0;
  /** Fencing tokens are unique in the store, so a released and re-claimed key never reissues an old one. */
  #lastToken = 0;
  #closed = false;

  constructor(options: MemoryIdempotencyStoreOptions = {}) {
    this.#options = resolveStoreOptions(options);
    const { maxEntries = 100_000 } = options;
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new RangeError(`maxEntries must be a positive integer, got ${maxEntries}`);
    this.#maxEntries = maxEntries;
  }

  get leaseMs(): number {
    return this.#options.leaseMs;
  }

  /** Records currently held, in flight or completed. */
  get size(): number {
    return this.#records.size;
  }

  async claim(clientId: string, key: string, fingerprint: string): Promise<ClaimResult> {
    this.#assertOpen();
    const id = recordId(clientId, key);
    const now = this.#options.now();
    const existing = this.#records.get(id);
    if (existing && existing.expiresAt > now) {
      const verdict = judgeExistingRecord(existing, fingerprint, now, this.#options.leaseMs);
      if (verdict.outcome === 'replay') this.#touch(id, existing);
      if (verdict.outcome !== 'abandoned') return verdict;
    }
    this.#lastToken += 1;
    const token = this.#lastToken;
    this.#put(id, { fingerprint, token, lockedUntil: now + this.#options.leaseMs, expiresAt: claimExpiresAt(now, this.#options), response: undefined });
    return { outcome: 'claimed', token };
  }

  /**
   * What a claim would meet, without claiming: a replay, in-flight or mismatch for a live
   * record, undefined when the key is free (unknown, expired, or its lease ran out).
   */
  lookup(clientId: string, key: string, fingerprint: string): Exclude<ExistingRecordVerdict, { outcome: 'abandoned' }> | undefined {
    this.#assertOpen();
    const now = this.#options.now();
    const existing = this.#records.get(recordId(clientId, key));
    if (!existing || existing.expiresAt <= now) return undefined;
    const verdict = judgeExistingRecord(existing, fingerprint, now, this.#options.leaseMs);
    return verdict.outcome === 'abandoned' ? undefined : verdict;
  }

  async renew(clientId: string, key: string, token: number): Promise<LeaseOutcome> {
    this.#assertOpen();
    const held = this.#held(clientId, key, token);
    if (!held) return 'lost';
    const now = this.#options.now();
    held.lockedUntil = now + this.#options.leaseMs;
    held.expiresAt = Math.max(held.expiresAt, claimExpiresAt(now, this.#options));
    return 'ok';
  }

  async complete(clientId: string, key: string, token: number, response: StoredResponse, usage?: UsageEvent): Promise<LeaseOutcome> {
    this.#assertOpen();
    const held = this.#held(clientId, key, token);
    if (!held) return 'lost';
    const now = this.#options.now();
    this.#put(recordId(clientId, key), { fingerprint: held.fingerprint, token, lockedUntil: now, expiresAt: now + this.#options.retentionMs, response: copyResponse(response) });
    if (usage) this.#appendEvent(usage, now);
    return 'ok';
  }

  async append(event: UsageEvent): Promise<void> {
    this.#assertOpen();
    this.#appendEvent(event, this.#options.now());
  }

  async relay(limit: number, deliver: (events: UsageEvent[]) => Promise<ReadonlySet<string>>): Promise<RelayRound> {
    this.#assertOpen();
    // Claimed entries are skipped by a relay running at once, as rows locked in PostgreSQL would be.
    const batch: OutboxEntry[] = [];
    for (const entry of this.#outbox.values()) {
      if (batch.length >= limit) break;
      if (entry.sentAt === undefined && !entry.claimed) batch.push(entry);
    }
    for (const entry of batch) entry.claimed = true;
    try {
      const delivered = await deliver(batch.map((entry) => entry.event));
      const now = this.#options.now();
      let marked = 0;
      for (const entry of batch) {
        if (!delivered.has(entry.event.id)) continue;
        entry.sentAt = now;
        marked += 1;
      }
      return { claimed: batch.length, delivered: marked };
    } finally {
      for (const entry of batch) entry.claimed = false;
    }
  }

  async backlog(): Promise<OutboxBacklog> {
    this.#assertOpen();
    let count = 0;
    let oldest: number | undefined;
    for (const entry of this.#outbox.values()) {
      if (entry.sentAt !== undefined) continue;
      count += 1;
      oldest ??= entry.createdAt;
    }
    return { count, oldestAgeMs: oldest === undefined ? undefined : Math.max(0, this.#options.now() - oldest) };
  }

  async purgeSent(batchSize?: number): Promise<number> {
    this.#assertOpen();
    const limit = resolveBatchSize(batchSize);
    const cutoff = this.#options.now() - this.#options.outboxRetentionMs;
    let purged = 0;
    for (const [seq, entry] of this.#outbox) {
      if (purged >= limit) break;
      if (entry.sentAt !== undefined && entry.sentAt <= cutoff) {
        this.#outbox.delete(seq);
        purged += 1;
      }
    }
    return purged;
  }

  #appendEvent(event: UsageEvent, now: number): void {
    this.#outboxSeq += 1;
    this.#outbox.set(this.#outboxSeq, { event, createdAt: now, sentAt: undefined, claimed: false });
  }

  async release(clientId: string, key: string, token: number): Promise<LeaseOutcome> {
    this.#assertOpen();
    if (!this.#held(clientId, key, token)) return 'lost';
    this.#records.delete(recordId(clientId, key));
    return 'ok';
  }

  async purgeExpired(batchSize?: number): Promise<number> {
    this.#assertOpen();
    const limit = resolveBatchSize(batchSize);
    const now = this.#options.now();
    let purged = 0;
    for (const [id, record] of this.#records) {
      if (purged >= limit) break;
      if (record.expiresAt <= now) {
        this.#records.delete(id);
        purged += 1;
      }
    }
    return purged;
  }

  async countExpired(): Promise<number> {
    this.#assertOpen();
    const now = this.#options.now();
    let expired = 0;
    for (const record of this.#records.values()) if (record.expiresAt <= now) expired += 1;
    return expired;
  }

  async healthy(): Promise<boolean> {
    return !this.#closed;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#records.clear();
    this.#outbox.clear();
  }

  /** The in-flight record `token` still holds (whether or not its lease ran out: nobody took it over), if any. */
  #held(clientId: string, key: string, token: number): MemoryRecord | undefined {
    const record = this.#records.get(recordId(clientId, key));
    return record && !record.response && record.token === token ? record : undefined;
  }

  #put(id: string, record: MemoryRecord): void {
    this.#records.delete(id);
    this.#records.set(id, record);
    if (this.#records.size > this.#maxEntries) this.#evictLeastRecentlyUsed(this.#options.now());
  }

  #touch(id: string, record: MemoryRecord): void {
    this.#records.delete(id);
    this.#records.set(id, record);
  }

  /**
   * Oldest first, skipping claims whose lock still runs: their requests are executing, and
   * forgetting them would let a retry execute a second time. Those are bounded by the
   * requests in flight, so the map stays bounded.
   */
  #evictLeastRecentlyUsed(now: number): void {
    for (const [id, record] of this.#records) {
      if (this.#records.size <= this.#maxEntries) return;
      const lockHeld = !record.response && record.lockedUntil > now && record.expiresAt > now;
      if (!lockHeld) this.#records.delete(id);
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new IdempotencyStoreClosed();
  }
}

interface OutboxEntry {
  event: UsageEvent;
  createdAt: number;
  sentAt: number | undefined;
  claimed: boolean;
}

/** Length-prefixed, so no pair of (clientId, key) can produce another pair's id. */
function recordId(clientId: string, key: string): string {
  return `${clientId.length}:${clientId}:${key}`;
}
