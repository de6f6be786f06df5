import type { Metrics } from '../http/metrics.js';
import { IdempotencyKeyInFlight, IdempotencyKeyReused, StoreUnavailable } from '../http/problems.js';
import type { IdempotencyStore, StoredResponse } from './store.js';

export type IdempotencyOutcome = 'executed' | 'replayed' | 'in_flight' | 'mismatch' | 'released';

/** What the caller sends: the stored response on a replay, else the one `execute` just produced. */
export interface IdempotentResult {
  response: StoredResponse;
  replayed: boolean;
}

/**
 * Runs `execute` at most once per (client, key): a completed key is replayed
 * byte-identically (the caller adds `Idempotent-Replayed: true`), an in-flight one is
 * 409, a key reused for another request is 422. Only 2xx answers are stored; a thrown
 * error (validation, 429, 5xx) releases the claim so the same key can be retried.
 *
 * It deals in plain responses rather than `Response` objects: reading a `Response`'s
 * body to store it costs a web stream per request (measured: about 1 ms each). What
 * `execute` returns is stored and replayed as it is, so it holds only what a replay may
 * repeat (status, content-type, body); the request id and rate-limit fields are added per
 * request by the caller. The non-2xx branch guards future callers: the predict route's
 * `execute` throws rather than return an error.
 */
export async function executeOnce(
  deps: { store: IdempotencyStore; metrics: Metrics; onOutcome: (outcome: IdempotencyOutcome) => void },
  scope: { clientId: string; key: string; fingerprint: string },
  execute: () => Promise<StoredResponse>,
): Promise<IdempotentResult> {
  const { store } = deps;
  const record = (outcome: IdempotencyOutcome) => {
    deps.metrics.idempotency.inc({ outcome });
    deps.onOutcome(outcome);
  };
  const claim = await store.claim(scope.clientId, scope.key, scope.fingerprint).catch((error: unknown) => {
    throw new StoreUnavailable('idempotency', { cause: error });
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
  let response: StoredResponse;
  try {
    response = await execute();
  } catch (error) {
    await store.release(scope.clientId, scope.key, scope.fingerprint).catch(() => {});
    record('released');
    throw error;
  }
  if (response.status < 200 || response.status > 299) {
    await store.release(scope.clientId, scope.key, scope.fingerprint).catch(() => {});
    record('released');
    return { response, replayed: false };
  }
  // The model has run: a failure to store must not turn into an error that invites a re-execution.
  await store.complete(scope.clientId, scope.key, scope.fingerprint, response).catch(() => {});
  record('executed');
  return { response, replayed: false };
}
