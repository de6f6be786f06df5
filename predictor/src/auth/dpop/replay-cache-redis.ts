import type { Redis } from 'ioredis';
import type { ProofReplayCache } from './replay-cache.js';

export interface RedisProofReplayCacheOptions {
  /** The connection; the caller owns it (`close()` leaves it open). */
  redis: Redis;
  /** Prefix of every key: REDIS_KEY_PREFIX + `dpop-jti:`. */
  keyPrefix: string;
  /** Milliseconds since the epoch. Default `Date.now`. */
  now?: () => number;
}

/**
 * Proofs seen by any replica sharing the Redis: one `SET key 1 PX <ttl> NX` per proof,
 * which Redis runs atomically, so of two replicas given the same proof at once exactly
 * one gets OK. Redis expires the key when the proof is too old to be accepted anyway.
 * Redis errors reject; the failure policy decides.
 */
export class RedisProofReplayCache implements ProofReplayCache {
  readonly #redis: Redis;
  readonly #keyPrefix: string;
  readonly #now: () => number;

  constructor(options: RedisProofReplayCacheOptions) {
    this.#redis = options.redis;
    this.#keyPrefix = options.keyPrefix;
    this.#now = options.now ?? Date.now;
  }

  async firstUse(key: string, expiresAtMs: number): Promise<boolean> {
    // At least 1 ms: PX 0 is an error, and a proof accepted now must be remembered for a moment at least.
    const ttlMs = Math.max(1, Math.ceil(expiresAtMs - this.#now()));
    const reply = await this.#redis.set(`${this.#keyPrefix}${key}`, '1', 'PX', ttlMs, 'NX');
    return reply === 'OK';
  }

  async healthy(): Promise<boolean> {
    return this.#redis.ping().then(
      (reply) => reply === 'PONG',
      () => false,
    );
  }
}
