/**
 * The usage event: what the predictor meters for each executed prediction, and what the
 * ledger counts. Producer (outbox, relay) and consumer (ledger) share this one definition.
 */

export const USAGE_EVENT_TYPE = 'prediction.executed';

export interface UsageEvent {
  /** The prediction id (`pred_…`): stable across re-publishes, so consumers deduplicate on it. */
  id: string;
  type: typeof USAGE_EVENT_TYPE;
  clientId: string;
  plan: string;
  /** How the client authenticated: the token's signing key (`kid`) or the API key's id. */
  credential: { method: 'bearer-jwt' | 'api-key'; id: string | undefined };
  /** Input rows predicted (what is billed). */
  rows: number;
  modelId: string;
  idempotencyKey: string | undefined;
  /** When the prediction executed, RFC 3339 UTC with milliseconds. */
  occurredAt: string;
}

/** An event that does not decode: a producer bug or a foreign message on the subject. */
export class MalformedUsageEvent extends Error {
  override name = 'MalformedUsageEvent';
}

export function encodeUsageEvent(event: UsageEvent): string {
  return JSON.stringify(event);
}

/** Parses and checks every field; throws MalformedUsageEvent naming the first one that is wrong. */
export function decodeUsageEvent(data: string | Uint8Array): UsageEvent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
  } catch {
    throw new MalformedUsageEvent('not JSON');
  }
  return checkUsageEvent(parsed);
}

/**
 * Checks every field of a value that should be an event (parsed JSON, or an object handed
 * over in process) and returns a clean copy with `occurredAt` normalised; throws
 * MalformedUsageEvent naming the first field that is wrong.
 */
export function checkUsageEvent(value: unknown): UsageEvent {
  const event = value as Record<string, unknown> | null;
  const fail = (field: string): never => {
    throw new MalformedUsageEvent(`bad or missing field "${field}"`);
  };
  if (typeof event !== 'object' || event === null || Array.isArray(event)) throw new MalformedUsageEvent('not an object');
  if (typeof event['id'] !== 'string' || event['id'] === '') fail('id');
  if (event['type'] !== USAGE_EVENT_TYPE) fail('type');
  if (typeof event['clientId'] !== 'string' || event['clientId'] === '') fail('clientId');
  if (typeof event['plan'] !== 'string') fail('plan');
  const credential = event['credential'] as Record<string, unknown> | null;
  if (typeof credential !== 'object' || credential === null) fail('credential');
  if (credential!['method'] !== 'bearer-jwt' && credential!['method'] !== 'api-key') fail('credential.method');
  if (credential!['id'] !== undefined && typeof credential!['id'] !== 'string') fail('credential.id');
  if (!Number.isSafeInteger(event['rows']) || (event['rows'] as number) < 1) fail('rows');
  if (typeof event['modelId'] !== 'string') fail('modelId');
  if (event['idempotencyKey'] !== undefined && typeof event['idempotencyKey'] !== 'string') fail('idempotencyKey');
  if (typeof event['occurredAt'] !== 'string' || Number.isNaN(Date.parse(event['occurredAt']))) fail('occurredAt');
  return {
    id: event['id'] as string,
    type: USAGE_EVENT_TYPE,
    clientId: event['clientId'] as string,
    plan: event['plan'] as string,
    credential: { method: credential!['method'] as 'bearer-jwt' | 'api-key', id: credential!['id'] as string | undefined },
    rows: event['rows'] as number,
    modelId: event['modelId'] as string,
    idempotencyKey: event['idempotencyKey'] as string | undefined,
    occurredAt: new Date(Date.parse(event['occurredAt'] as string)).toISOString(),
  };
}

/** The UTC day an event counts for, `YYYY-MM-DD`. */
export function usageDay(event: Pick<UsageEvent, 'occurredAt'>): string {
  return event.occurredAt.slice(0, 10);
}

export const USAGE_SUBJECT_PREFIX = 'usage.predictions';

/**
 * `usage.predictions.<client>`: a client id becomes one NATS subject token. Characters a
 * token may not hold (`.`, `*`, `>`, whitespace) and anything outside [A-Za-z0-9_-] are
 * escaped as `~XX` (hex), so two client ids never share a subject.
 */
export function usageSubject(clientId: string): string {
  const token = [...new TextEncoder().encode(clientId)]
    .map((byte) => {
      const char = String.fromCharCode(byte);
      return /[A-Za-z0-9_-]/.test(char) ? char : `~${byte.toString(16).padStart(2, '0')}`;
    })
    .join('');
  return `${USAGE_SUBJECT_PREFIX}.${token}`;
}
