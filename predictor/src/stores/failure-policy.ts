import type { Logger, UsageEvent } from '@m2m/common';
import type { Metrics } from '../http/metrics.js';
import { HttpProblem, StoreUnavailable } from '../http/problems.js';
import { MemoryIdempotencyStore } from '../idempotency/memory.js';
import type { ClaimResult, IdempotencyStore, IdempotencyStoreOptions, LeaseOutcome, StoredResponse } from '../idempotency/store.js';
import { MemoryRateLimiter } from '../limits/memory.js';
import { MemoryProofReplayCache, type ProofReplayCache } from '../auth/dpop/replay-cache.js';
import type { OutboxBacklog, RelayRound } from '../usage/outbox.js';
import type { Plan } from '../limits/plans.js';
import type { RateLimitDecision, RateLimiter } from '../limits/rate-limiter.js';
import { describeStoreError, isOutage, type OutageClassifier } from './outage.js';

export { isOutage } from './outage.js';

/**
 * What a request meets when a shared store (Redis, PostgreSQL) fails:
 * - `fail-closed` (the default): 503 with Retry-After. Limits and exactly-once hold.
 * - `degrade`: this replica's own memory takes over. Limits hold per replica at a fraction
 *   of the plan; a key answered from memory keeps its answer at this replica (during the
 *   outage and after it), not at the others, and a key completed in the shared store before
 *   the outage can execute again.
 */
export type FailurePolicy = 'fail-closed' | 'degrade';

export type StoreName = 'rate_limiter' | 'idempotency' | 'dpop_replay';

/** How a 503's detail names the store ("The … store is unavailable"). */
const STORE_TITLES: Record<StoreName, string> = { rate_limiter: 'rate-limit', idempotency: 'idempotency', dpop_replay: 'DPoP replay' };

export interface StoreGuardOptions {
  store: StoreName;
  /** The engine behind it, for logs and /readyz (`redis`, `postgres`). */
  engine: string;
  policy: FailurePolicy;
  logger: Logger;
  metrics: Metrics;
  /** While the store is down, how often a request may try it again (ms). Default 1 000. */
  probeIntervalMs?: number;
  /**
   * Whether an error of the engine is an outage (policy, store marked down) rather than this
   * request's own (503 for it alone). Default `isOutage`, which knows both engines' connection
   * errors by name; open.ts passes the engine's own (`isRedisOutage`, `isPostgresOutage`).
   */
  isOutage?: OutageClassifier;
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
    this.#options = { probeIntervalMs: 1_000, now: Date.now, isOutage, ...options };
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
   * Any other error of the store (a rejected command, a bug) is a 503 for this request
   * alone, whatever the policy: the store stays up, and no store error ever becomes a 500.
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
      this.#markDownOrThrow(error);
      return this.#onFailure(fallback, error, count);
    }
    this.#markUp();
    return result;
  }

  /**
   * Runs an operation that only the store can answer (a lease held there), whether or not the
   * store is known down: an outage marks it down and, like any other error of the store, is
   * a 503 for this request; a success marks it up.
   */
  async attempt<T>(operation: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await operation();
    } catch (error) {
      this.#markDownOrThrow(error);
      throw new StoreUnavailable(STORE_TITLES[this.#options.store], { cause: error });
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
    throw new StoreUnavailable(STORE_TITLES[store], { cause });
  }

  /** Marks the store down on an outage; rethrows an answer decided already (an HttpProblem), and any other error as this request's own 503. */
  #markDownOrThrow(error: unknown): void {
    if (error instanceof HttpProblem) throw error;
    if (!this.#options.isOutage(error)) this.#onRequestError(error);
    this.#markDown(error);
  }

  /** Logs and counts an error that is not an outage, and answers 503 for this request only. */
  #onRequestError(error: unknown): never {
    const { store, engine, policy, logger, metrics } = this.#options;
    metrics.storeErrors.inc({ store });
    logger.error({ event: 'store.error', store, engine, policy, ...describeStoreError(error) }, `${store} store (${engine}) failed this request (not an outage): answering 503`);
    throw new StoreUnavailable(STORE_TITLES[store], { cause: error });
  }

  #markDown(error: unknown): void {
    if (this.#down) return;
    this.#down = true;
    const { store, engine, policy, logger, metrics } = this.#options;
    metrics.storeUp.set({ store }, 0);
    logger.error({ event: 'store.down', store, engine, policy, ...describeStoreError(error) }, `${store} store (${engine}) unavailable: ${policy === 'degrade' ? 'this replica falls back to its own memory' : 'answering 503'}`);
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
 * The shared DPoP replay cache under a failure policy. `fail-closed`: 503, no proof is
 * accepted while Redis is down. `degrade`: this replica's memory: a proof accepted here is
 * still refused here, but could be replayed once at each other replica during the outage.
 */
export class GuardedProofReplayCache implements ProofReplayCache {
  readonly #fallback = new MemoryProofReplayCache();

  constructor(
    private readonly primary: ProofReplayCache & { healthy(): Promise<boolean> },
    readonly guard: StoreGuard,
  ) {}

  firstUse(key: string, expiresAtMs: number): Promise<boolean> {
    return this.guard.use(
      () => this.primary.firstUse(key, expiresAtMs),
      () => this.#fallback.firstUse(key, expiresAtMs),
    );
  }

  healthy(): Promise<boolean> {
    return this.guard.probe(() => this.primary.healthy()).then((status) => status === 'up');
  }
}

interface HeldLease {
  fingerprint: string;
  /** Where the lease lives; `claiming` while the claim is under way. */
  where: 'primary' | 'fallback' | 'claiming';
  token: number;
}

/**
 * A shared idempotency store under a failure policy.
 *
 * Under `degrade`, what this replica answered from its own memory during an outage stays its
 * answer after the outage: a claim first consults that memory, until each record's retention
 * ends (or the memory's bound evicts it), and only then the shared store. Writing those
 * records back to PostgreSQL instead was rejected: another replica may have executed the same
 * key there meanwhile, and no write-back can make two executions one.
 *
 * Every lease this replica holds or is claiming is also known here, whichever store holds it,
 * so a duplicate arriving at this replica while the store flips between down and up meets the
 * holder (409) instead of claiming in the other store.
 */
export class GuardedIdempotencyStore implements IdempotencyStore {
  readonly #fallback: MemoryIdempotencyStore;
  readonly #held = new Map<string, HeldLease>();

  constructor(
    private readonly primary: IdempotencyStore,
    readonly guard: StoreGuard,
    fallbackOptions: IdempotencyStoreOptions,
  ) {
    this.#fallback = new MemoryIdempotencyStore(fallbackOptions);
  }

  get leaseMs(): number {
    return this.primary.leaseMs;
  }

  async claim(clientId: string, key: string, fingerprint: string): Promise<ClaimResult> {
    const id = claimKey(clientId, key);
    const held = this.#held.get(id);
    if (held) return held.fingerprint === fingerprint ? { outcome: 'in-flight', retryAfterSeconds: 1 } : { outcome: 'mismatch' };
    const remembered = this.#fallback.lookup(clientId, key, fingerprint);
    if (remembered) return remembered;

    // No token yet: nothing can renew, complete or release a lease that is still being claimed.
    this.#held.set(id, { fingerprint, where: 'claiming', token: 0 });
    const served = { byFallback: false };
    try {
      const result = await this.guard.use(
        () => this.primary.claim(clientId, key, fingerprint),
        () => {
          served.byFallback = true;
          return this.#fallback.claim(clientId, key, fingerprint);
        },
      );
      if (result.outcome === 'claimed') this.#held.set(id, { fingerprint, where: served.byFallback ? 'fallback' : 'primary', token: result.token });
      else this.#held.delete(id);
      return result;
    } catch (error) {
      this.#held.delete(id);
      throw error;
    }
  }

  renew(clientId: string, key: string, token: number): Promise<LeaseOutcome> {
    return this.#onLease(clientId, key, token, (store) => store.renew(clientId, key, token), 'keeps');
  }

  complete(clientId: string, key: string, token: number, response: StoredResponse, usage?: UsageEvent): Promise<LeaseOutcome> {
    // A completion that failed keeps the lease known here, so that its holder can still release it.
    return this.#onLease(clientId, key, token, (store) => store.complete(clientId, key, token, response, usage), 'ends-if-answered');
  }

  /** Under `degrade`, into this replica's memory while the shared store is down (lost if the replica dies before relaying it). */
  append(event: UsageEvent): Promise<void> {
    return this.guard.use(
      () => this.primary.append(event),
      () => this.#fallback.append(event),
    );
  }

  /** This replica's own events (from an outage) first; then the shared outbox, which fails while it is down. */
  async relay(limit: number, deliver: (events: UsageEvent[]) => Promise<ReadonlySet<string>>): Promise<RelayRound> {
    const own = await this.#fallback.relay(limit, deliver);
    const shared = await this.primary.relay(limit, deliver);
    return { claimed: own.claimed + shared.claimed, delivered: own.delivered + shared.delivered };
  }

  async backlog(): Promise<OutboxBacklog> {
    const [own, shared] = await Promise.all([this.#fallback.backlog(), this.primary.backlog()]);
    const ages = [own.oldestAgeMs, shared.oldestAgeMs].filter((age): age is number => age !== undefined);
    return { count: own.count + shared.count, oldestAgeMs: ages.length === 0 ? undefined : Math.max(...ages) };
  }

  async purgeSent(batchSize?: number): Promise<number> {
    const [own, shared] = await Promise.all([this.#fallback.purgeSent(batchSize), this.primary.purgeSent(batchSize)]);
    return own + shared;
  }

  release(clientId: string, key: string, token: number): Promise<LeaseOutcome> {
    return this.#onLease(clientId, key, token, (store) => store.release(clientId, key, token), 'ends');
  }

  async purgeExpired(batchSize?: number): Promise<number> {
    const [shared, own] = await Promise.all([this.primary.purgeExpired(batchSize), this.#fallback.purgeExpired(batchSize)]);
    return shared + own;
  }

  async countExpired(): Promise<number> {
    const [shared, own] = await Promise.all([this.primary.countExpired(), this.#fallback.countExpired()]);
    return shared + own;
  }

  async healthy(): Promise<boolean> {
    return (await this.guard.probe(() => this.primary.healthy())) === 'up';
  }

  async close(): Promise<void> {
    await Promise.all([this.primary.close(), this.#fallback.close()]);
  }

  /** Runs a lease operation in the store that holds the lease, whatever the shared store's state now. */
  async #onLease(
    clientId: string,
    key: string,
    token: number,
    operation: (store: IdempotencyStore) => Promise<LeaseOutcome>,
    lifetime: 'keeps' | 'ends-if-answered' | 'ends',
  ): Promise<LeaseOutcome> {
    const id = claimKey(clientId, key);
    const held = this.#held.get(id);
    if (!held || held.where === 'claiming' || held.token !== token) return 'lost';
    let answered = false;
    let outcome: LeaseOutcome | undefined;
    try {
      outcome = held.where === 'fallback' ? await operation(this.#fallback) : await this.guard.attempt(() => operation(this.primary));
      answered = true;
      return outcome;
    } finally {
      // A lease the store reports lost is over here too: else this replica would answer 409 for the key forever.
      if (lifetime === 'ends' || (answered && (lifetime === 'ends-if-answered' || outcome === 'lost'))) this.#held.delete(id);
    }
  }
}

const claimKey = (clientId: string, key: string) => `${clientId}\u0000${key}`;
