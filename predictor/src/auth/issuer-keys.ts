import { createRemoteJWKSet, type JWTVerifyGetKey } from 'jose';
import type { Logger } from '@m2m/common';
import { KeysUnavailable } from '../http/problems.js';

export interface IssuerKeysOptions {
  issuer: string;
  /** Skip discovery and fetch keys from here. Default: the issuer metadata's `jwks_uri`. */
  jwksUri?: string | undefined;
  /** Minimum time (in milliseconds) between two fetches triggered by an unknown `kid`. Default 30 000 (jose's). */
  cooldownMs?: number;
  /** Time (in milliseconds) after which cached keys are refreshed. Default 600 000 (jose's). */
  cacheMaxAgeMs?: number;
  /** Timeout (in milliseconds) of one metadata or JWKS fetch. Default 5 000. */
  timeoutMs?: number;
  logger: Logger;
}

export class DiscoveryError extends Error {
  override name = 'DiscoveryError';
}

/**
 * The authorization server's signing keys: discovered from its metadata, fetched once
 * before the predictor reports ready, then cached by jose's remote JWK set.
 */
export class IssuerKeys {
  readonly #options: IssuerKeysOptions;
  #remote: ReturnType<typeof createRemoteJWKSet> | undefined;
  #loading: Promise<void> | undefined;

  constructor(options: IssuerKeysOptions) {
    this.#options = options;
  }

  /** True once the key set has been fetched at least once. */
  get ready(): boolean {
    return this.#remote !== undefined;
  }

  /** For `jwtVerify`: resolves the key for a token header, or 503 while no keys were ever loaded. */
  readonly getKey: JWTVerifyGetKey = (header, token) => {
    if (!this.#remote) throw new KeysUnavailable(1);
    return this.#remote(header, token);
  };

  /**
   * Loads the keys, retrying with capped exponential backoff until it succeeds or the
   * signal aborts. Concurrent calls share one attempt.
   */
  load(signal?: AbortSignal): Promise<void> {
    this.#loading ??= this.#loadWithRetry(signal).finally(() => {
      this.#loading = undefined;
    });
    return this.#loading;
  }

  async #loadWithRetry(signal: AbortSignal | undefined): Promise<void> {
    const { logger } = this.#options;
    for (let attempt = 1; !this.#remote; attempt += 1) {
      try {
        const jwksUri = new URL(this.#options.jwksUri ?? (await this.#discoverJwksUri(signal)));
        const remote = createRemoteJWKSet(jwksUri, {
          cooldownDuration: this.#options.cooldownMs ?? 30_000,
          cacheMaxAge: this.#options.cacheMaxAgeMs ?? 600_000,
          timeoutDuration: this.#options.timeoutMs ?? 5_000,
        });
        await remote.reload();
        this.#remote = remote;
        logger.info({ event: 'jwks.loaded', jwksUri: jwksUri.href, keys: remote.jwks()?.keys.map((key) => key.kid) }, 'signing keys loaded');
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        const delayMs = Math.min(5_000, 250 * 2 ** (attempt - 1));
        logger.warn({ event: 'jwks.unavailable', attempt, retryInMs: delayMs, reason: (error as Error).message }, 'signing keys not loaded yet');
        await new Promise((resolve) => setTimeout(resolve, delayMs).unref());
      }
    }
  }

  async #discoverJwksUri(signal: AbortSignal | undefined): Promise<string> {
    const { issuer, timeoutMs = 5_000 } = this.#options;
    const signals = [AbortSignal.timeout(timeoutMs), ...(signal ? [signal] : [])];
    const response = await fetch(`${issuer}/.well-known/oauth-authorization-server`, { signal: AbortSignal.any(signals) });
    if (!response.ok) throw new DiscoveryError(`issuer metadata answered ${response.status}`);
    const metadata = (await response.json()) as { issuer?: unknown; jwks_uri?: unknown };
    // RFC 8414 section 3.3: the metadata must name the issuer it was fetched from.
    if (metadata.issuer !== issuer) throw new DiscoveryError(`issuer metadata names "${String(metadata.issuer)}", expected "${issuer}"`);
    if (typeof metadata.jwks_uri !== 'string') throw new DiscoveryError('issuer metadata has no jwks_uri');
    return metadata.jwks_uri;
  }
}
