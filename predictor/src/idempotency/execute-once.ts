import type { Logger, UsageEvent } from '@m2m/common';
import type { Metrics } from '../http/metrics.js';
import { HttpProblem, IdempotencyKeyInFlight, IdempotencyKeyReused, IdempotencyLeaseLost, StoreUnavailable } from '../http/problems.js';
import type { IdempotencyStore, StoredResponse } from './store.js';

/**
 * - `executed`: the result was stored, then sent (the one answer this key will ever give).
 * - `refused`: storing the result failed, so it was not sent (503); a retry executes again.
 * - `lease_lost`: another attempt took the key over while this one ran; its result was dropped (503).
 */
export type IdempotencyOutcome = 'executed' | 'replayed' | 'in_flight' | 'mismatch' | 'released' | 'refused' | 'lease_lost';

/** What one execution produced: the response, and the usage event that meters it (none for an error). */
export interface Execution {
  response: StoredResponse;
  usage?: UsageEvent | undefined;
}

/** What the caller sends: the stored response on a replay, else the one `execute` just produced. */
export interface IdempotentResult {
  response: StoredResponse;
  replayed: boolean;
}

export interface ExecuteOnceDeps {
  store: IdempotencyStore;
  metrics: Metrics;
  logger: Logger;
  onOutcome: (outcome: IdempotencyOutcome) => void;
}

/**
 * Runs `execute` at most once per (client, key) whose answer anyone sees: a completed key is
 * replayed byte-identically (the caller adds `Idempotent-Replayed: true`), an in-flight one is
 * 409, a key reused for another request is 422. Only 2xx answers are stored; a thrown error
 * (validation, 429, 5xx) releases the claim so the same key can be retried.
 *
 * Commit or refuse: a 2xx goes out only once the store holds it under this request's lease.
 * If storing fails, or the lease was taken over meanwhile, the client gets a 503 instead and
 * its retry meets the stored answer or executes anew. The model may then have run twice, but
 * no client ever holds an answer that a replay of its key would contradict.
 *
 * It deals in plain responses rather than `Response` objects: reading a `Response`'s
 * body to store it costs a web stream per request (measured: about 1 ms each). What
 * `execute` returns is stored and replayed as it is, so it holds only what a replay may
 * repeat (status, content-type, body); the request id and rate-limit fields are added per
 * request by the caller.
 */
export async function executeOnce(
  deps: ExecuteOnceDeps,
  scope: { clientId: string; key: string; fingerprint: string },
  execute: () => Promise<Execution>,
): Promise<IdempotentResult> {
  const { store } = deps;
  const record = (outcome: IdempotencyOutcome) => {
    deps.metrics.idempotency.inc({ outcome });
    deps.onOutcome(outcome);
  };
  const claim = await store.claim(scope.clientId, scope.key, scope.fingerprint).catch((error: unknown) => {
    throw asStoreProblem(error);
  });
  switch (claim.outcome) {
    case 'replay':
      record('replayed');
      return { response: claim.response, replayed: true };
    case 'in-flight':
      record('in_flight');
      throw new IdempotencyKeyInFlight(claim.retryAfterSeconds);
    case 'mismatch':
      record('mismatch');
      throw new IdempotencyKeyReused();
    case 'claimed':
      break;
  }

  const lease = new LeaseKeeper(store, scope.clientId, scope.key, claim.token);
  const release = async () => {
    await store.release(scope.clientId, scope.key, claim.token).catch(() => 'lost');
    record('released');
  };
  let response: StoredResponse;
  let usage: UsageEvent | undefined;
  try {
    ({ response, usage } = await execute());
  } catch (error) {
    await lease.stop();
    await release();
    throw error;
  }
  await lease.stop();
  if (response.status < 200 || response.status > 299) {
    await release();
    return { response, replayed: false };
  }

  const leaseLost = async () => {
    // The successor holds the lease now, so this finds nothing to release; it lets a guarded store forget the lease.
    await store.release(scope.clientId, scope.key, claim.token).catch(() => 'lost');
    record('lease_lost');
    deps.logger.warn({ event: 'idempotency.lease_lost', idempotencyKey: scope.key.slice(0, 100), fencingToken: claim.token }, 'lease taken over while executing: result dropped');
    return new IdempotencyLeaseLost();
  };
  if (lease.lost) throw await leaseLost();
  let stored: Awaited<ReturnType<IdempotencyStore['complete']>>;
  try {
    // The usage event commits with the completion: metered exactly when the answer is stored.
    stored = await store.complete(scope.clientId, scope.key, claim.token, response, usage);
  } catch (error) {
    // Release if the store answers, so the retry need not wait for the lease to run out; not
    // awaited, so a silent store does not hold the 503 back for another timeout. If the
    // completion did commit (only its answer was lost), this finds no claim and does nothing.
    void store.release(scope.clientId, scope.key, claim.token).catch(() => 'lost');
    record('refused');
    throw asStoreProblem(error);
  }
  if (stored === 'lost') throw await leaseLost();
  record('executed');
  return { response, replayed: false };
}

function asStoreProblem(error: unknown): HttpProblem {
  return error instanceof HttpProblem ? error : new StoreUnavailable('idempotency', { cause: error });
}

/**
 * Renews a lease every third of its duration while the holder works, so a live holder keeps
 * its key however long it runs, and a crashed one loses it within one lease. A failed renewal
 * (store unreachable) is only retried at the next beat: completion decides in the end.
 */
class LeaseKeeper {
  #lost = false;
  readonly #timer: NodeJS.Timeout;
  #renewing: Promise<unknown> = Promise.resolve();

  constructor(store: IdempotencyStore, clientId: string, key: string, token: number) {
    let pending = false;
    this.#timer = setInterval(() => {
      // A renewal still waiting on a slow store is not doubled: they would pile up in its pool.
      if (pending) return;
      pending = true;
      this.#renewing = Promise.resolve()
        .then(() => store.renew(clientId, key, token))
        .then(
          (outcome) => {
            if (outcome === 'lost') this.#markLost();
          },
          () => {},
        )
        .finally(() => {
          pending = false;
        });
    }, Math.max(1, Math.floor(store.leaseMs / 3)));
    this.#timer.unref();
  }

  /** Stops renewing, once any renewal under way has answered. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#renewing;
  }

  /** A renewal found the lease taken over. */
  get lost(): boolean {
    return this.#lost;
  }

  #markLost(): void {
    this.#lost = true;
    clearInterval(this.#timer);
  }
}
