import {
  claimExpiresAt,
  copyResponse,
  IdempotencyStoreClosed,
  judgeExistingRecord,
  resolveBatchSize,
  resolveStoreOptions,
  type ClaimResult,
  type IdempotencyStore,
  type IdempotencyStoreOptions,
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
  #closed = false;

  constructor(options: MemoryIdempotencyStoreOptions = {}) {
    this.#options = resolveStoreOptions(options);
    const { maxEntries = 100_000 } = options;
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new RangeError(`maxEntries must be a positive integer, got ${maxEntries}`);
    this.#maxEntries = maxEntries;
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
      const verdict = judgeExistingRecord(existing, fingerprint, now, this.#options.lockTimeoutMs);
      if (verdict.outcome === 'replay') this.#touch(id, existing);
      if (verdict.outcome !== 'abandoned') return verdict;
    }
    this.#put(id, {
      fingerprint,
      lockedUntil: now + this.#options.lockTimeoutMs,
      expiresAt: claimExpiresAt(now, this.#options),
      response: undefined,
    });
    return { outcome: 'claimed' };
  }

  async complete(clientId: string, key: string, fingerprint: string, response: StoredResponse): Promise<void> {
    this.#assertOpen();
    const id = recordId(clientId, key);
    const now = this.#options.now();
    const existing = this.#records.get(id);
    // The first completion wins, and another request's record is never overwritten. A missing
    // record (released by a request that took over the claim) is stored anyway: a response
    // exists, so a retry must replay it rather than execute again.
    if (existing && existing.expiresAt > now && (existing.response || existing.fingerprint !== fingerprint)) return;
    this.#put(id, { fingerprint, lockedUntil: now, expiresAt: now + this.#options.retentionMs, response: copyResponse(response) });
  }

  async release(clientId: string, key: string, fingerprint: string): Promise<void> {
    this.#assertOpen();
    const id = recordId(clientId, key);
    const existing = this.#records.get(id);
    if (existing && !existing.response && existing.fingerprint === fingerprint) this.#records.delete(id);
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

  async healthy(): Promise<boolean> {
    return !this.#closed;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#records.clear();
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

/** Length-prefixed, so no pair of (clientId, key) can produce another pair's id. */
function recordId(clientId: string, key: string): string {
  return `${clientId.length}:${clientId}:${key}`;
}
