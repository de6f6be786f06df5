import { errors, importJWK, type JWK, type JWTVerifyGetKey } from 'jose';
import type { Logger } from '@m2m/common';
import { KeysUnavailable } from '../http/problems.js';

export interface KeySetOptions {
  issuer: string;
  /** Skip discovery and fetch keys from here. Default: the issuer metadata's `jwks_uri`. */
  jwksUri?: string | undefined;
  /** Minimum time (in milliseconds) between two fetches, whatever triggers them. Default 30 000. */
  cooldownMs?: number;
  /** Age (in milliseconds) after which the keys are refreshed in the background. Default 600 000. */
  maxAgeMs?: number;
  /**
   * How long (in milliseconds) past `maxAgeMs` the last known keys keep verifying while
   * refreshes fail. Beyond it they are dropped and verification answers 503. Default 3 600 000.
   */
  staleIfErrorMs?: number;
  /** Timeout (in milliseconds) of one metadata or JWKS fetch. Default 5 000. */
  timeoutMs?: number;
  logger: Logger;
  /** Called after every JWKS fetch, for metrics. */
  onFetch?: (outcome: 'success' | 'failure') => void;
  /** Milliseconds since the epoch. Default `Date.now`. */
  now?: () => number;
  fetch?: typeof fetch;
}

interface VerificationKey {
  alg: string;
  key: Awaited<ReturnType<typeof importJWK>>;
}

interface LoadedKeys {
  byKid: Map<string, VerificationKey>;
  fetchedAt: number;
}

export class DiscoveryError extends Error {
  override name = 'DiscoveryError';
}

/**
 * The authorization server's signing keys, with the resilience jose's
 * `createRemoteJWKSet` does not give (it refetches inside a verification and fails
 * it when the key server is down): keys are imported once per fetch, every fetch is
 * shared by concurrent verifications, fetches are at least `cooldownMs` apart, a
 * failed refresh keeps the last known keys for a bounded time, and no keys at all is
 * a 503, never a 401.
 */
export class KeySet {
  readonly #options: KeySetOptions;
  readonly #now: () => number;
  readonly #fetch: typeof fetch;
  #keys: LoadedKeys | undefined;
  #jwksUri: string | undefined;
  #lastAttemptAt = Number.NEGATIVE_INFINITY;
  #pendingFetch: Promise<void> | undefined;

  constructor(options: KeySetOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#fetch = options.fetch ?? fetch;
    this.#jwksUri = options.jwksUri;
  }

  get #cooldownMs(): number {
    return this.#options.cooldownMs ?? 30_000;
  }

  get #maxAgeMs(): number {
    return this.#options.maxAgeMs ?? 600_000;
  }

  get #staleIfErrorMs(): number {
    return this.#options.staleIfErrorMs ?? 3_600_000;
  }

  /** True while usable keys are held (fetched, and not past the stale-if-error bound). */
  get ready(): boolean {
    return this.#usableKeys() !== undefined;
  }

  /**
   * Whether usable keys include `kid` (a token verified earlier is trusted only while
   * its key is published). Like `getKey`, it starts a background refresh of stale keys,
   * so a revoked key ends its cached tokens within the same bound.
   */
  has(kid: string | undefined): boolean {
    const keys = this.#usableKeys();
    if (keys) this.#refreshIfStale(keys);
    return kid !== undefined && keys?.byKid.has(kid) === true;
  }

  /** The key ids currently held. */
  get kids(): string[] {
    return [...(this.#keys?.byKid.keys() ?? [])];
  }

  /** For `jwtVerify`: the key for a token header. */
  readonly getKey: JWTVerifyGetKey = async (header) => {
    let keys = this.#usableKeys();
    if (!keys) {
      await this.#refetch().catch(() => {});
      keys = this.#usableKeys();
      if (!keys) throw new KeysUnavailable(Math.max(1, Math.ceil(this.#cooldownRemainingMs() / 1000)));
    }
    this.#refreshIfStale(keys);
    const found = this.#find(keys, header.kid, header.alg);
    if (found) return found.key;
    // An unknown kid may be a freshly rotated key: refetch, at most once per cool-down.
    if (this.#cooldownRemainingMs() === 0 || this.#pendingFetch) {
      await this.#refetch().catch(() => {});
      const refreshed = this.#usableKeys();
      const retried = refreshed && this.#find(refreshed, header.kid, header.alg);
      if (retried) return retried.key;
    }
    throw new errors.JWKSNoMatchingKey();
  };

  /**
   * Initial load: retries with capped exponential backoff until keys are held or the
   * signal aborts. The predictor reports ready only after it.
   */
  async load(signal?: AbortSignal): Promise<void> {
    for (let attempt = 1; !this.#keys; attempt += 1) {
      try {
        await this.#fetchKeys();
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        const delayMs = Math.min(5_000, 250 * 2 ** (attempt - 1));
        this.#options.logger.warn({ event: 'jwks.unavailable', attempt, retryInMs: delayMs, reason: (error as Error).message }, 'signing keys not loaded yet');
        await new Promise((resolve) => setTimeout(resolve, delayMs).unref());
      }
    }
  }

  #refreshIfStale(keys: LoadedKeys): void {
    if (this.#now() - keys.fetchedAt >= this.#maxAgeMs) this.#refetch().catch(() => {});
  }

  #usableKeys(): LoadedKeys | undefined {
    const keys = this.#keys;
    if (!keys) return undefined;
    return this.#now() - keys.fetchedAt < this.#maxAgeMs + this.#staleIfErrorMs ? keys : undefined;
  }

  #find(keys: LoadedKeys, kid: string | undefined, alg: string | undefined): VerificationKey | undefined {
    if (kid !== undefined) {
      const key = keys.byKid.get(kid);
      return key && key.alg === alg ? key : undefined;
    }
    // RFC 9068 tokens carry a kid; without one, only an unambiguous key is acceptable.
    const candidates = [...keys.byKid.values()].filter((key) => key.alg === alg);
    return candidates.length === 1 ? candidates[0] : undefined;
  }

  #cooldownRemainingMs(): number {
    return Math.max(0, this.#lastAttemptAt + this.#cooldownMs - this.#now());
  }

  /** Single flight, and never more often than the cool-down. */
  #refetch(): Promise<void> {
    if (this.#pendingFetch) return this.#pendingFetch;
    if (this.#cooldownRemainingMs() > 0) return Promise.resolve();
    return this.#fetchKeys();
  }

  #fetchKeys(): Promise<void> {
    this.#pendingFetch ??= this.#fetchAndImport().finally(() => {
      this.#pendingFetch = undefined;
    });
    return this.#pendingFetch;
  }

  async #fetchAndImport(): Promise<void> {
    const { logger, onFetch } = this.#options;
    this.#lastAttemptAt = this.#now();
    try {
      this.#jwksUri ??= await this.#discoverJwksUri();
      const jwks = (await this.#getJson(this.#jwksUri)) as { keys?: unknown };
      if (!Array.isArray(jwks.keys)) throw new errors.JWKSInvalid('the JWKS has no keys array');
      const byKid = new Map<string, VerificationKey>();
      for (const jwk of jwks.keys as JWK[]) {
        if (!jwk.kid || !jwk.alg || (jwk.use !== undefined && jwk.use !== 'sig')) continue;
        try {
          byKid.set(jwk.kid, { alg: jwk.alg, key: await importJWK(jwk, jwk.alg) });
        } catch (error) {
          logger.warn({ event: 'jwks.key_skipped', kid: jwk.kid, alg: jwk.alg, reason: (error as Error).message }, 'unusable key in JWKS');
        }
      }
      this.#keys = { byKid, fetchedAt: this.#now() };
      onFetch?.('success');
      logger.info({ event: 'jwks.loaded', jwksUri: this.#jwksUri, kids: [...byKid.keys()] }, 'signing keys loaded');
    } catch (error) {
      onFetch?.('failure');
      logger.warn({ event: 'jwks.fetch_failed', reason: (error as Error).message, keptKids: this.kids }, 'JWKS fetch failed');
      throw error;
    }
  }

  async #discoverJwksUri(): Promise<string> {
    const { issuer } = this.#options;
    const metadata = (await this.#getJson(`${issuer}/.well-known/oauth-authorization-server`)) as { issuer?: unknown; jwks_uri?: unknown };
    // RFC 8414 section 3.3: the metadata must name the issuer it was fetched from.
    if (metadata.issuer !== issuer) throw new DiscoveryError(`issuer metadata names "${String(metadata.issuer)}", expected "${issuer}"`);
    if (typeof metadata.jwks_uri !== 'string') throw new DiscoveryError('issuer metadata has no jwks_uri');
    return metadata.jwks_uri;
  }

  async #getJson(url: string): Promise<unknown> {
    const response = await this.#fetch(url, { signal: AbortSignal.timeout(this.#options.timeoutMs ?? 5_000), headers: { accept: 'application/json' } });
    if (!response.ok) throw new DiscoveryError(`${url} answered ${response.status}`);
    return response.json();
  }
}
