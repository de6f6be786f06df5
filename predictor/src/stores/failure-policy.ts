import type { Logger } from '@m2m/common';
import type { Metrics } from '../http/metrics.js';
import { StoreUnavailable } from '../http/problems.js';
import { MemoryIdempotencyStore } from '../idempotency/memory.js';
import type { ClaimResult, IdempotencyStore, IdempotencyStoreOptions, StoredResponse } from '../idempotency/store.js';
import { MemoryRateLimiter } from '../limits/memory.js';
import type { Plan } from '../limits/plans.js';
import type { RateLimitDecision, RateLimiter } from '../limits/rate-limiter.js';

/**
 * What a request meets when a shared store (Redis, PostgreSQL) fails:
 * - `fail-closed` (the default): 503 with Retry-After. Limits and exactly-once hold.
 * - `degrade`: this replica's own memory takes over. Limits hold per replica at a fraction
 *   of the plan; idempotency holds only for retries that reach the same replica during the
 *   outage, and a key completed in the shared store before it can execute again.
 */
export type FailurePolicy = 'fail-closed' | 'degrade';

export type StoreName = 'rate_limiter' | 'idempotency';

export interface StoreGuardOptions {
  store: StoreName;
  /** The engine behind it, for logs and /readyz (`redis`, `postgres`). */
  engine: string;
  policy: FailurePolicy;
  logger: Logger;
  metrics: Metrics;
  /** While the store is down, how often a request may try it again (ms). Default 1 000. */
  probeIntervalMs?: number;
  now?: () => number;
}

/**
 * Tracks whether a store is up and applies the failure policy. While the store is down
 * at most one request per probe interval tries it, so an outage (or a hung connection)
 * costs one timeout per interval instead of one per request, and recovery is noticed
 * by the first request after it.
 */
export class StoreGuard {
  readonly #options: Required<StoreGuardOptions>;
  #down = false;
  #lastAttemptMs = Number.NEGATIVE_INFINITY;

  constructor(options: StoreGuardOptions) {
    this.#options = { probeIntervalMs: 1_000, now: Date.now, ...options };
    options.metrics.storeUp.set({ store: options.store }, 1);
  }

  get store(): StoreName {
    return this.#options.store;
  }

  get policy(): FailurePolicy {
    return this.#options.policy;
  }

  /** `up`, or `down` with what requests get meanwhile. */
  get status(): 'up' | 'down' {
    return this.#down ? 'down' : 'up';
  }

  get engine(): string {
    return this.#options.engine;
  }

  /**
   * Runs `primary`; on an outage (or while the store is known down) applies the policy.
   * `secondary` uses (the rate-limit headers of a response decided already) neither probe
   * a store known down nor count as a request the policy refused or served.
   */
  async use<T>(primary: () => Promise<T>, fallback: () => Promise<T>, options: { secondary?: boolean } = {}): Promise<T> {
    const now = this.#options.now();
    const count = !options.secondary;
    if (this.#down && (options.secondary || now - this.#lastAttemptMs < this.#options.probeIntervalMs)) return this.#onFailure(fallback, undefined, count);
    this.#lastAttemptMs = now;
    let result: T;
    try {
      result = await primary();
    } catch (error) {
      // Only a lost or stuck connection is an outage; any other error is this request's own.
      if (!isOutage(error)) throw error;
      this.#markDown(error as Error);
      return this.#onFailure(fallback, error, count);
    }
    this.#markUp();
    return result;
  }

  /** For /readyz: asks the store directly, so recovery shows even without traffic. */
  async probe(healthy: () => Promise<boolean>): Promise<'up' | 'down'> {
    const ok = await healthy().catch(() => false);
    if (ok) this.#markUp();
    else this.#markDown(new Error('health check failed'));
    return this.status;
  }

  #onFailure<T>(fallback: () => Promise<T>, cause: unknown, count: boolean): Promise<T> {
    const { store, policy, metrics } = this.#options;
    if (policy === 'degrade') {
      if (count) metrics.storeFailures.inc({ store, action: 'fallback' });
      return fallback();
    }
    if (count) metrics.storeFailures.inc({ store, action: 'refused' });
    throw new StoreUnavailable(store === 'rate_limiter' ? 'rate-limit' : 'idempotency', { cause });
  }

  #markDown(error: Error): void {
    if (this.#down) return;
    this.#down = true;
    const { store, engine, policy, logger, metrics } = this.#options;
    metrics.storeUp.set({ store }, 0);
    logger.error({ event: 'store.down', store, engine, policy, reason: error.message }, `${store} store (${engine}) unavailable: ${policy === 'degrade' ? 'this replica falls back to its own memory' : 'answering 503'}`);
  }

  #markUp(): void {
    if (!this.#down) return;
    this.#down = false;
    const { store, engine, logger, metrics } = this.#options;
    metrics.storeUp.set({ store }, 1);
    logger.info({ event: 'store.up', store, engine }, `${store} store (${engine}) is back`);
  }
}

/** A shared rate limiter under a failure policy; the fallback gives each replica `fallbackFraction` of every plan. */
export class GuardedRateLimiter implements RateLimiter {
  readonly #fallback = new MemoryRateLimiter();
  readonly #scaledPlans = new Map<Plan, Plan>();

  constructor(
    private readonly primary: RateLimiter & { healthy(): Promise<boolean> },
    readonly guard: StoreGuard,
    private readonly fallbackFraction: number,
  ) {}

  consume(clientId: string, plan: Plan): Promise<RateLimitDecision> {
    return this.guard.use(
      () => this.primary.consume(clientId, plan),
      () => this.#fallback.consume(clientId, this.#scaled(plan)),
    );
  }

  peek(clientId: string, plan: Plan): Promise<RateLimitDecision> {
    return this.guard.use(
      () => this.primary.peek(clientId, plan),
      () => this.#fallback.peek(clientId, this.#scaled(plan)),
      { secondary: true },
    );
  }

  healthy(): Promise<boolean> {
    return this.guard.probe(() => this.primary.healthy()).then((status) => status === 'up');
  }

  async close(): Promise<void> {
    await Promise.all([this.primary.close?.(), this.#fallback.close()]);
  }

  #scaled(plan: Plan): Plan {
    let scaled = this.#scaledPlans.get(plan);
    if (!scaled) {
      const share = (value: number) => Math.max(1, Math.floor(value * this.fallbackFraction));
      scaled = { ...plan, burst: share(plan.burst), refillPerSecond: plan.refillPerSecond * this.fallbackFraction, dailyQuota: share(plan.dailyQuota) };
      this.#scaledPlans.set(plan, scaled);
    }
    return scaled;
  }
}

/**
 * A shared idempotency store under a failure policy. A claim taken in the fallback is
 * completed or released there too, wherever the shared store stands by then.
 */
export class GuardedIdempotencyStore implements IdempotencyStore {
  readonly #fallback: MemoryIdempotencyStore;
  readonly #claimedInFallback = new Set<string>();

  constructor(
    private readonly primary: IdempotencyStore,
    readonly guard: StoreGuard,
    fallbackOptions: IdempotencyStoreOptions,
  ) {
    this.#fallback = new MemoryIdempotencyStore(fallbackOptions);
  }

  claim(clientId: string, key: string, fingerprint: string): Promise<ClaimResult> {
    return this.guard.use(
      () => this.primary.claim(clientId, key, fingerprint),
      async () => {
        const result = await this.#fallback.claim(clientId, key, fingerprint);
        if (result.outcome === 'claimed') this.#claimedInFallback.add(claimKey(clientId, key));
        return result;
      },
    );
  }

  async complete(clientId: string, key: string, fingerprint: string, response: StoredResponse): Promise<void> {
    if (this.#claimedInFallback.delete(claimKey(clientId, key))) return this.#fallback.complete(clientId, key, fingerprint, response);
    return this.primary.complete(clientId, key, fingerprint, response);
  }

  async release(clientId: string, key: string, fingerprint: string): Promise<void> {
    if (this.#claimedInFallback.delete(claimKey(clientId, key))) return this.#fallback.release(clientId, key, fingerprint);
    return this.primary.release(clientId, key, fingerprint);
  }

  async purgeExpired(batchSize?: number): Promise<number> {
    const [shared, own] = await Promise.all([this.primary.purgeExpired(batchSize), this.#fallback.purgeExpired(batchSize)]);
    return shared + own;
  }

  async healthy(): Promise<boolean> {
    return (await this.guard.probe(() => this.primary.healthy())) === 'up';
  }

  async close(): Promise<void> {
    await Promise.all([this.primary.close(), this.#fallback.close()]);
  }
}

/**
 * Errors that mean the engine cannot be used: connection refused, reset or timed out, a
 * closed or unwritable client, a statement cancelled by its timeout, the server shutting
 * down. A failed script reply or a constraint error is a bug or a conflict, not an outage.
 */
export function isOutage(error: unknown): boolean {
  const { code, message = '' } = (error ?? {}) as { code?: string; message?: string };
  if (code && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|57P01|57P02|57P03|57014|08\w{3})$/.test(code)) return true;
  return /ECONN|ETIMEDOUT|ENOTFOUND|connection|timeout|timed out|not writeable|enableOfflineQueue|terminat/i.test(message);
}

const claimKey = (clientId: string, key: string) => `${clientId}\u0000${key}`;
