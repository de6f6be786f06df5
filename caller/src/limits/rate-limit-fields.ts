import { parseItem, parseList, Token, type BareItem, type List } from 'structured-headers';

/** One rate-limit policy as one response reports it. */
export interface PolicyReport {
  /** The policy's name (`"burst"`, `"daily"`), or `x-ratelimit` for the de facto trio. */
  name: string;
  /** Units the policy grants per window (`q`, or `X-RateLimit-Limit`); undefined when not sent. */
  quota: number | undefined;
  /** The policy's window in seconds (`w` of RateLimit-Policy); undefined when not sent (always, for `X-RateLimit-*`). */
  windowSeconds: number | undefined;
  /** Units left when the server answered (`r`, or `X-RateLimit-Remaining`). */
  remaining: number;
  /** Seconds from the answer until the policy has its whole quota again (`t`, or `X-RateLimit-Reset`). */
  resetSeconds: number;
}

/** Above this, an `X-RateLimit-Reset` is a Unix time (GitHub's style), not delta-seconds: no delay is 31 years. */
const UNIX_TIME_THRESHOLD = 1_000_000_000;

/**
 * The rate-limit policies a response reports, or undefined when it reports none:
 * - `RateLimit` and `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers, sections 3 and 4),
 *   both Structured Field Lists (RFC 9651), read with a structured-field parser;
 * - else the de facto `X-RateLimit-Limit`, `-Remaining`, `-Reset` (Integers; a Reset above 10^9 is
 *   read as a Unix time), as one policy named `x-ratelimit`.
 * A malformed field counts as absent: a call must never fail on a header it only uses for pacing.
 * A policy without `t` (or `X-RateLimit-Reset`) resets after its window, or after 1 s when that is unknown too.
 */
export function parseRateLimitFields(headers: Headers, wallNowMs: number): PolicyReport[] | undefined {
  return ietfPolicies(headers) ?? xRateLimitPolicy(headers, wallNowMs);
}

function ietfPolicies(headers: Headers): PolicyReport[] | undefined {
  const states = parseSfList(headers.get('ratelimit'));
  if (!states) return undefined;
  const declared = new Map<string, Map<string, BareItem>>();
  for (const [name, parameters] of items(parseSfList(headers.get('ratelimit-policy')) ?? [])) declared.set(name, parameters);

  const policies: PolicyReport[] = [];
  for (const [name, parameters] of items(states)) {
    const remaining = nonNegative(parameters.get('r'));
    if (remaining === undefined) continue;
    const policy = declared.get(name);
    const windowSeconds = nonNegative(policy?.get('w'));
    policies.push({
      name,
      quota: nonNegative(policy?.get('q')),
      windowSeconds,
      remaining: Math.floor(remaining),
      resetSeconds: Math.ceil(nonNegative(parameters.get('t')) ?? windowSeconds ?? 1),
    });
  }
  return policies.length > 0 ? policies : undefined;
}

function xRateLimitPolicy(headers: Headers, wallNowMs: number): PolicyReport[] | undefined {
  const remaining = nonNegative(parseSfItem(headers.get('x-ratelimit-remaining')));
  if (remaining === undefined) return undefined;
  const reset = nonNegative(parseSfItem(headers.get('x-ratelimit-reset')));
  const resetSeconds = reset === undefined ? 1 : reset >= UNIX_TIME_THRESHOLD ? Math.max(0, reset - wallNowMs / 1000) : reset;
  return [{ name: 'x-ratelimit', quota: nonNegative(parseSfItem(headers.get('x-ratelimit-limit'))), windowSeconds: undefined, remaining: Math.floor(remaining), resetSeconds: Math.ceil(resetSeconds) }];
}

/** The named items of a List: a String or a Token names a policy; inner lists and other values are skipped. */
function* items(list: List): Generator<[string, Map<string, BareItem>]> {
  for (const [value, parameters] of list) {
    if (typeof value === 'string') yield [value, parameters];
    else if (value instanceof Token) yield [value.toString(), parameters];
  }
}

function parseSfList(value: string | null): List | undefined {
  if (value === null) return undefined;
  try {
    return parseList(value);
  } catch {
    return undefined;
  }
}

function parseSfItem(value: string | null): BareItem | undefined {
  if (value === null) return undefined;
  try {
    return parseItem(value)[0];
  } catch {
    return undefined;
  }
}

function nonNegative(value: BareItem | undefined): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined;
}
