import type { Metrics } from '../http/metrics.js';
import { IdempotencyKeyInFlight, IdempotencyKeyReused, StoreUnavailable } from '../http/problems.js';
import type { IdempotencyStore, StoredResponse } from './store.js';

/** Headers replayed with a stored response; the rest (request id, rate limits) describe the new request. */
const REPLAYED_HEADERS = ['content-type'];

export type IdempotencyOutcome = 'executed' | 'replayed' | 'in_flight' | 'mismatch' | 'released';

/**
 * Runs `execute` at most once per (client, key): a completed key is replayed
 * byte-identically with `Idempotent-Replayed: true`, an in-flight one is 409, a key
 * reused for another request is 422. Only 2xx answers are stored; a thrown error
 * (validation, 429, 5xx) releases the claim so the same key can be retried.
 */
export async function executeOnce(
  deps: { store: IdempotencyStore; metrics: Metrics; onOutcome: (outcome: IdempotencyOutcome) => void },
  scope: { clientId: string; key: string; fingerprint: string },
  execute: () => Promise<Response>,
): Promise<Response> {
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
      return replay(claim.response);
    case 'in-flight':
      record('in_flight');
      throw new IdempotencyKeyInFlight(claim.retryAfterSeconds);
    case 'mismatch':
      record('mismatch');
      throw new IdempotencyKeyReused();
    case 'claimed':
      break;
  }
  let response: Response;
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
    return response;
  }
  const body = await response.clone().text();
  const headers: Record<string, string> = {};
  for (const name of REPLAYED_HEADERS) {
    const value = response.headers.get(name);
    if (value !== null) headers[name] = value;
  }
  // The model has run: a failure to store must not turn into an error that invites a re-execution.
  await store.complete(scope.clientId, scope.key, scope.fingerprint, { status: response.status, headers, body }).catch(() => {});
  record('executed');
  return response;
}

function replay(stored: StoredResponse): Response {
  return new Response(stored.body, { status: stored.status, headers: { ...stored.headers, 'idempotent-replayed': 'true' } });
}
