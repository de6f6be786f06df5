import { createHash } from 'node:crypto';

/**
 * Where the `jti` of every accepted DPoP proof is remembered until the proof is too old to
 * be accepted anyway (RFC 9449 section 11.1), so that a proof works once.
 */
export interface ProofReplayCache {
  /**
   * Records `key` until `expiresAtMs` (milliseconds since the epoch). True the first time;
   * false when it is recorded already: a replay. Atomic for everyone sharing the cache.
   */
  firstUse(key: string, expiresAtMs: number): Promise<boolean>;
  /** False while the cache cannot be used (its engine is down). */
  healthy?(): Promise<boolean>;
  close?(): Promise<void>;
}

/**
 * The cache key of a proof: its `jti` under the key that signed it, so one client's
 * identifiers never collide with another's, hashed to a fixed length (a `jti` is the
 * client's choice, of any length).
 */
export function proofReplayKey(thumbprint: string, jti: string): string {
  return createHash('sha256').update(`${thumbprint}\u0000${jti}`).digest('base64url');
}

/** A `firstUse` refused because the memory cache is full of proofs that are all still fresh. */
export class ReplayCacheFull extends Error {
  override name = 'ReplayCacheFull';
}

export interface MemoryProofReplayCacheOptions {
  /** Most proofs remembered at once. Default 200 000 (at a 60 s window: 3 300 proofs per second). */
  maxEntries?: number;
  /** Milliseconds since the epoch. Default `Date.now`. */
  now?: () => number;
}

/**
 * This process's memory: enough for one predictor. Replicas need the shared one (Redis),
 * or a proof accepted by one replica would be accepted once more by each other one.
 * When full of live proofs it refuses (the caller answers 503): forgetting a live one
 * would let it be replayed.
 */
export class MemoryProofReplayCache implements ProofReplayCache {
  readonly #seen = new Map<string, number>();
  readonly #maxEntries: number;
  readonly #now: () => number;

  constructor(options: MemoryProofReplayCacheOptions = {}) {
    this.#maxEntries = options.maxEntries ?? 200_000;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#seen.size;
  }

  async firstUse(key: string, expiresAtMs: number): Promise<boolean> {
    const now = this.#now();
    const known = this.#seen.get(key);
    if (known !== undefined && known > now) return false;
    this.#sweep(now);
    if (this.#seen.size >= this.#maxEntries) throw new ReplayCacheFull(`the DPoP replay cache holds ${this.#seen.size} live proofs`);
    this.#seen.delete(key);
    this.#seen.set(key, expiresAtMs);
    return true;
  }

  async healthy(): Promise<boolean> {
    return true;
  }

  /**
   * Entries are inserted in about the order they expire (every proof gets the same window),
   * so expired ones are at the front: drop them until the first live one.
   */
  #sweep(now: number): void {
    for (const [key, expiresAt] of this.#seen) {
      if (expiresAt > now) break;
      this.#seen.delete(key);
    }
  }
}
