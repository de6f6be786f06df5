/**
 * Brute-force protection of client authentication: only failed authentications
 * (`invalid_client`) count, successes never do.
 *
 * Two limits, because each alone is either weak or dangerous (the env variables are in
 * config.ts and docs/configuration.md):
 *
 * - Per source address, a bucket: `addressBurst` failures, then one more every
 *   `addressRefillMs`; while it is empty every token request from that address is refused
 *   (429), whatever client it names. It bounds one attacker (10 guesses a minute by
 *   default) and costs a legitimate client nothing unless it shares the attacker's address.
 * - Per client id, a delay: after `clientFreeFailures` failures in a row, each further
 *   failure refuses requests naming that client for 1 s, 2 s, 4 s… up to `clientMaxDelayMs`.
 *   It bounds an attacker spread over many addresses (about one guess per max delay per
 *   client, in total). A hard lock-out would let anyone lock a client out; so the delay is
 *   capped, it never applies to an address that authenticated as that client within
 *   `trustedAddressMs` (its usual callers keep working during an attack), a success ends it,
 *   and it is forgotten after `forgetMs` without failures. The cost: a legitimate client calling
 *   from a new address during a sustained attack may wait up to `clientMaxDelayMs` per attempt
 *   (Retry-After tells it how long).
 *
 * Failures are counted when they happen, so concurrent guesses admitted together all count:
 * the bucket goes into debt (down to -`addressBurst`), and the address waits it off. State is
 * per process (replicas each count on their own) and bounded (`maxTracked` entries per kind;
 * the least recently seen are forgotten first, which can only loosen a limit).
 */
export interface ClientAuthLimits {
  /** Failures a client id may have in a row before delays start. Default 5. */
  clientFreeFailures: number;
  /** The first delay (ms), doubled by each further failure. Default 1 000. */
  clientBaseDelayMs: number;
  /** The longest delay (ms): the most a legitimate client waits per attempt. Default 30 000. */
  clientMaxDelayMs: number;
  /** Failures one source address may make at once; 0 turns the per-address limit off (behind a proxy). Default 10. */
  addressBurst: number;
  /** Time in which an address earns back one failure (ms). Default 6 000 (10 a minute). */
  addressRefillMs: number;
  /** How long an address that authenticated as a client is exempt from that client's delay (ms). Default 3 600 000. */
  trustedAddressMs: number;
  /** A client's failure streak is forgotten after this long without failures (ms). Default 300 000. */
  forgetMs: number;
  /** Client ids and addresses tracked, each (memory bound). Default 10 000. */
  maxTracked: number;
}

export const DEFAULT_CLIENT_AUTH_LIMITS: ClientAuthLimits = {
  clientFreeFailures: 5,
  clientBaseDelayMs: 1_000,
  clientMaxDelayMs: 30_000,
  addressBurst: 10,
  addressRefillMs: 6_000,
  trustedAddressMs: 3_600_000,
  forgetMs: 300_000,
  maxTracked: 10_000,
};

/** Which limit refused a request. */
export type ThrottleLimit = 'client' | 'address';

export type Admission =
  | { admitted: true; settle: (outcome: 'success' | 'failure' | 'other') => void }
  | { admitted: false; limit: ThrottleLimit; retryAfterMs: number };

interface ClientRecord {
  streak: number;
  lastFailureAt: number;
  blockedUntil: number;
  /** Address → when it last authenticated as this client. */
  trusted: Map<string, number>;
}

interface AddressRecord {
  tokens: number;
  updatedAt: number;
}

const MAX_TRUSTED_PER_CLIENT = 64;

export class ClientAuthThrottle {
  readonly limits: ClientAuthLimits;
  readonly #now: () => number;
  readonly #clients = new Map<string, ClientRecord>();
  readonly #addresses = new Map<string, AddressRecord>();

  /** @param now current time in ms (injected, so tests are exact). */
  constructor(limits: Partial<ClientAuthLimits> = {}, now: () => number = Date.now) {
    this.limits = { ...DEFAULT_CLIENT_AUTH_LIMITS, ...limits };
    this.#now = now;
  }

  /**
   * Decides whether a token request may try to authenticate. An admitted request is
   * settled once with its outcome: `failure` (invalid_client) counts, `success` trusts the
   * address for that client and ends its delay, `other` (any answer not about the
   * credentials) changes nothing.
   */
  admit(clientId: string | undefined, address: string): Admission {
    const now = this.#now();
    const bucket = this.limits.addressBurst > 0 ? this.#refilled(address, now) : undefined;
    if (bucket && bucket.tokens < 1) return { admitted: false, limit: 'address', retryAfterMs: Math.ceil((1 - bucket.tokens) * this.limits.addressRefillMs) };
    const client = clientId === undefined ? undefined : this.#clients.get(clientId);
    if (client && now < client.blockedUntil && !this.#isTrusted(client, address, now)) {
      return { admitted: false, limit: 'client', retryAfterMs: client.blockedUntil - now };
    }
    let settled = false;
    return {
      admitted: true,
      settle: (outcome) => {
        if (settled) return;
        settled = true;
        const at = this.#now();
        if (outcome === 'failure') {
          if (this.limits.addressBurst > 0) {
            const debited = this.#refilled(address, at);
            debited.tokens = Math.max(-this.limits.addressBurst, debited.tokens - 1);
          }
          if (clientId !== undefined) this.#failed(clientId, at);
        } else if (outcome === 'success' && clientId !== undefined) {
          this.#succeeded(clientId, address, at);
        }
      },
    };
  }

  /** How many client ids and addresses are tracked (bounded by maxTracked). */
  get tracked(): { clients: number; addresses: number } {
    return { clients: this.#clients.size, addresses: this.#addresses.size };
  }

  #refilled(address: string, now: number): AddressRecord {
    const record = touch(this.#addresses, address, () => ({ tokens: this.limits.addressBurst, updatedAt: now }), this.limits.maxTracked);
    const earned = Math.max(0, now - record.updatedAt) / this.limits.addressRefillMs;
    record.tokens = Math.min(this.limits.addressBurst, record.tokens + earned);
    record.updatedAt = now;
    return record;
  }

  #isTrusted(client: ClientRecord, address: string, now: number): boolean {
    const since = client.trusted.get(address);
    return since !== undefined && now - since < this.limits.trustedAddressMs;
  }

  #failed(clientId: string, now: number): void {
    const record = touch(this.#clients, clientId, () => ({ streak: 0, lastFailureAt: now, blockedUntil: 0, trusted: new Map() }), this.limits.maxTracked);
    if (now - record.lastFailureAt > this.limits.forgetMs) record.streak = 0;
    record.streak += 1;
    record.lastFailureAt = now;
    const beyond = record.streak - this.limits.clientFreeFailures;
    if (beyond > 0) {
      // 2^beyond overflows to Infinity long after the cap; min() keeps it finite.
      const delay = Math.min(this.limits.clientBaseDelayMs * 2 ** (beyond - 1), this.limits.clientMaxDelayMs);
      record.blockedUntil = Math.max(record.blockedUntil, now + delay);
    }
  }

  #succeeded(clientId: string, address: string, now: number): void {
    const record = touch(this.#clients, clientId, () => ({ streak: 0, lastFailureAt: now, blockedUntil: 0, trusted: new Map() }), this.limits.maxTracked);
    record.streak = 0;
    record.blockedUntil = 0;
    record.trusted.delete(address);
    record.trusted.set(address, now);
    if (record.trusted.size > MAX_TRUSTED_PER_CLIENT) record.trusted.delete(record.trusted.keys().next().value!);
  }
}

/** The entry for `key`, moved to the most-recent end; creates it, dropping the least recent beyond `max`. */
function touch<V>(map: Map<string, V>, key: string, create: () => V, max: number): V {
  let value = map.get(key);
  if (value === undefined) value = create();
  else map.delete(key);
  map.set(key, value);
  if (map.size > max) map.delete(map.keys().next().value!);
  return value;
}
