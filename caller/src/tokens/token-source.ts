import * as oidc from 'openid-client';
import type { DPoPKey } from '../dpop/dpop-key.js';
import { fullJitterDelay } from '../retry/backoff.js';
import { systemClock, type Clock } from '../retry/clock.js';
import { parseRetryAfter } from '../retry/retry-after.js';
import { toTokenRequestError, TokenRequestError } from './token-errors.js';

export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt';

/** A private key for private_key_jwt client assertions, with the kid the auth-server knows it by. */
export type ClientAssertionKey = oidc.PrivateKey & { kid: string };

export interface TokenSourceOptions {
  issuer: string;
  clientId: string;
  /** Returns the current client secret; called for every token request so a rotated secret is picked up. */
  clientSecret?: () => string;
  /** Returns the current assertion key (private_key_jwt); called for every token request so a rotated key is picked up. */
  clientKey?: () => ClientAssertionKey | Promise<ClientAssertionKey>;
  /** Default `private_key_jwt` when `clientKey` is given, else `client_secret_basic`. */
  authMethod?: ClientAuthMethod;
  /** Space-separated scopes to ask for when a request names none. Default: none (the server's default). */
  scope?: string | undefined;
  /** RFC 8707 resource indicator when a request names none. Default: none (the auth-server's default resource). */
  resource?: string | undefined;
  /**
   * Sender-constrained tokens (DPoP, RFC 9449): every token request carries a proof of this key
   * (openid-client's DPoP handle, which retries once with the server's nonce on `use_dpop_nonce`),
   * the tokens are bound to it (`token_type` DPoP), and the predictor client makes its proofs with
   * it. One key per token source. Undefined: bearer tokens.
   */
  dpop?: DPoPKey | undefined;
  /** Allows plain http to the issuer; only for loopback or a private network (see `assertIssuerTransport`). */
  allowInsecureHttp?: boolean;
  /** Token requests per refresh when the endpoint fails transiently (network, 429, 5xx). Default 4. */
  maxAttempts?: number;
  /** Longest wait between two token requests (in milliseconds). Default 10 000. */
  maxDelayMs?: number;
  /** Monotonic time for expiry arithmetic (immune to wall-clock jumps), and the waits between retries. */
  clock?: Clock;
  /** Uniform [0, 1); spreads refreshes and retries so that many callers don't act at once. Default `Math.random`. */
  random?: () => number;
  /** Replaces `fetch` (tests, proxies). */
  fetch?: typeof fetch;
  onEvent?: (event: TokenEvent) => void;
}

/** What a token is for; with the issuer and the client it is the cache key. */
export interface TokenRequest {
  /** Space-separated scopes. Default: the source's `scope`. */
  scope?: string | undefined;
  /** RFC 8707 resource indicator. Default: the source's `resource`. */
  resource?: string | undefined;
}

/** What the token source did; carries no secret and no token. */
export interface TokenEvent {
  kind: 'requested' | 'issued' | 'failed';
  attempt: number;
  scope: string | undefined;
  /** The OAuth error code (or network_error) of a failed request. */
  error?: string | undefined;
  /** The token's lifetime (in milliseconds), when issued. */
  lifetimeMs?: number | undefined;
  /** How the issued token is presented: `DPoP` (bound to the source's key) or `Bearer`. */
  tokenType?: AccessToken['tokenType'];
}

export interface AccessToken {
  value: string;
  /**
   * The `token_type` the authorization server issued it with, kept with the cached token: `DPoP`
   * (bound to `dpopKey`: sent only as `Authorization: DPoP` with a proof of that key, never as
   * Bearer) or `Bearer`. Undefined (a token made by hand): Bearer.
   */
  tokenType?: 'Bearer' | 'DPoP';
  /** The key a DPoP token is bound to; set exactly when `tokenType` is DPoP. */
  dpopKey?: DPoPKey | undefined;
  /** Cache key: issuer, client, scope, resource. */
  readonly cacheKey: string;
  scope: string | undefined;
  /** Monotonic time (ms) at which the token was requested. */
  requestedAt: number;
  /** Monotonic time (ms) at which the token expires, measured from when it was requested. */
  expiresAt: number;
  /** Monotonic time (ms) after which a background refresh starts. */
  refreshAt: number;
}

interface CacheEntry {
  current?: AccessToken;
  pending?: Promise<AccessToken>;
  /** After a failed early refresh, the next one waits until then: no hammering a struggling token endpoint. */
  retryRefreshAt?: number;
}

/** Refresh at a random point between these fractions of the lifetime. */
const REFRESH_WINDOW = { from: 0.7, to: 0.85 } as const;

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** Plain http leaks bearer tokens: only loopback is allowed unless explicitly opted in. */
export function assertIssuerTransport(issuer: string, allowInsecureHttp: boolean): void {
  const url = new URL(issuer);
  if (url.protocol === 'https:' || allowInsecureHttp || LOOPBACK_HOSTS.has(url.hostname)) return;
  throw new TokenRequestError(
    `refusing plain http to ${url.host}: use https, or set ALLOW_INSECURE_HTTP=true on a private network`,
    'insecure_transport',
    undefined,
    false,
  );
}

/** What discovery found, and the DPoP handle that signs the token requests' proofs. */
interface Discovered {
  configuration: oidc.Configuration;
  dpop: oidc.DPoPHandle | undefined;
}

/** How #runDiscovery authenticates, and the options every metadata request shares. */
interface MetadataRequest {
  clientAuth: oidc.ClientAuth;
  discovery: oidc.DiscoveryRequestOptions;
}

/**
 * Client-credentials access tokens from `openid-client`, cached and refreshed ahead
 * of expiry. openid-client has no cache, refresh or single flight, so those live here.
 */
export class TokenSource {
  readonly #options: TokenSourceOptions;
  readonly #clock: Clock;
  readonly #random: () => number;
  #discovered: Promise<Discovered> | undefined;
  /** Per (issuer, client, scope, resource): the current token and the refresh in flight. */
  readonly #cache = new Map<string, CacheEntry>();
  #tokenRequests = 0;

  constructor(options: TokenSourceOptions) {
    assertIssuerTransport(options.issuer, options.allowInsecureHttp ?? false);
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
  }

  /** The key this source's tokens are bound to (DPoP); undefined: bearer tokens. */
  get dpopKey(): DPoPKey | undefined {
    return this.#options.dpop;
  }

  /** Token requests sent to the token endpoint so far. */
  get tokenRequests(): number {
    return this.#tokenRequests;
  }

  /**
   * A valid token. Callers wait only when there is none; inside the refresh window they
   * get the current token while one background refresh runs.
   */
  async getToken(request: TokenRequest = {}): Promise<AccessToken> {
    const scope = request.scope ?? this.#options.scope;
    const resource = request.resource ?? this.#options.resource;
    const cacheKey = JSON.stringify([this.#options.issuer, this.#options.clientId, scope ?? '', resource ?? '']);
    let entry = this.#cache.get(cacheKey);
    if (!entry) this.#cache.set(cacheKey, (entry = {}));
    const { current } = entry;
    const now = this.#clock.now();
    if (current && now < current.expiresAt) {
      // A failed early refresh keeps the still-valid token and tries again a quarter of the remaining lifetime (at most 5 s) later.
      if (now >= current.refreshAt && now >= (entry.retryRefreshAt ?? 0) && !entry.pending) {
        this.#refresh(entry, cacheKey, scope, resource).catch(() => {
          entry.retryRefreshAt = this.#clock.now() + Math.min(5_000, (current.expiresAt - this.#clock.now()) / 4);
        });
      }
      return current;
    }
    return this.#refresh(entry, cacheKey, scope, resource);
  }

  /** Drops `token` after the API rejected it; a no-op if a newer token already replaced it. */
  invalidate(token: AccessToken): void {
    const entry = this.#cache.get(token.cacheKey);
    if (entry?.current === token) entry.current = undefined;
  }

  /** Single flight: concurrent callers of one cache key share one token request. */
  #refresh(entry: CacheEntry, cacheKey: string, scope: string | undefined, resource: string | undefined): Promise<AccessToken> {
    entry.pending ??= this.#requestToken(cacheKey, scope, resource)
      .then((token) => (entry.current = token))
      .finally(() => {
        entry.pending = undefined;
      });
    return entry.pending;
  }

  /** Retries what a retry can fix (network, 429, 5xx) with full-jitter backoff, honouring Retry-After. */
  async #requestToken(cacheKey: string, scope: string | undefined, resource: string | undefined): Promise<AccessToken> {
    const maxAttempts = this.#options.maxAttempts ?? 4;
    const maxDelayMs = this.#options.maxDelayMs ?? 10_000;
    const emit = this.#options.onEvent ?? (() => {});
    for (let attempt = 1; ; attempt += 1) {
      try {
        emit({ kind: 'requested', attempt, scope });
        const token = await this.#requestTokenOnce(cacheKey, scope, resource);
        emit({ kind: 'issued', attempt, scope: token.scope, lifetimeMs: token.expiresAt - token.requestedAt, tokenType: token.tokenType });
        return token;
      } catch (error) {
        const failure = toTokenRequestError(error);
        emit({ kind: 'failed', attempt, scope, error: failure.code });
        if (!failure.retryable || attempt >= maxAttempts) throw failure;
        const retryAfterMs = parseRetryAfter(failure.retryAfter, this.#clock.wallNow()) ?? 0;
        if (retryAfterMs > maxDelayMs) throw failure;
        await this.#clock.sleep(Math.max(retryAfterMs, fullJitterDelay(attempt, { baseDelayMs: 250, maxDelayMs }, this.#random)));
      }
    }
  }

  async #requestTokenOnce(cacheKey: string, scope: string | undefined, resource: string | undefined): Promise<AccessToken> {
    const { configuration, dpop } = await this.#discover();
    const parameters: Record<string, string> = {};
    if (scope) parameters['scope'] = scope;
    if (resource) parameters['resource'] = resource;
    const sentAt = this.#clock.now();
    this.#tokenRequests += 1;
    // With a DPoP handle openid-client adds a fresh proof, keeps the endpoint's DPoP-Nonce, and on
    // 400 use_dpop_nonce sends the request once more at once with the nonce (a second refusal is final).
    const response = await oidc.clientCredentialsGrant(configuration, parameters, dpop ? { DPoP: dpop } : undefined).catch((error: unknown) => {
      throw toTokenRequestError(error, { name: 'token endpoint', url: configuration.serverMetadata().token_endpoint });
    });
    const tokenType = response.token_type === 'dpop' ? 'DPoP' : 'Bearer';
    if (dpop && tokenType !== 'DPoP') {
      // A bearer token where a bound one was asked for: using it would silently give up what DPoP is for.
      throw new TokenRequestError(
        `asked for a DPoP-bound token, got token_type ${response.token_type}: the authorization server at ${configuration.serverMetadata().issuer} does not bind tokens to keys (RFC 9449)`,
        'dpop_not_supported',
        undefined,
        false,
      );
    }
    const lifetimeMs = (response.expires_in ?? 60) * 1000;
    const refreshFraction = REFRESH_WINDOW.from + (REFRESH_WINDOW.to - REFRESH_WINDOW.from) * this.#random();
    return {
      value: response.access_token,
      tokenType,
      ...(tokenType === 'DPoP' ? { dpopKey: this.#options.dpop } : {}),
      cacheKey,
      scope: response.scope,
      requestedAt: sentAt,
      expiresAt: sentAt + lifetimeMs,
      refreshAt: sentAt + lifetimeMs * refreshFraction,
    };
  }

  #discover(): Promise<Discovered> {
    this.#discovered ??= this.#runDiscovery().catch((error: unknown) => {
      this.#discovered = undefined; // retry discovery on the next call
      throw error;
    });
    return this.#discovered;
  }

  /**
   * RFC 8414 metadata first (`/.well-known/oauth-authorization-server`, what any OAuth 2
   * server may serve), then OpenID Discovery (`/.well-known/openid-configuration`); an
   * issuer that already names a `/.well-known/` document is fetched as it is. Neither
   * found is a configuration error naming both URLs, not a failed authentication.
   */
  async #fetchMetadata(url: URL, options: MetadataRequest): Promise<oidc.Configuration> {
    const { clientId } = this.#options;
    const attempts: { algorithm: 'oauth2' | 'oidc'; url: string }[] = url.href.includes('/.well-known/')
      ? [{ algorithm: 'oidc', url: url.href }]
      : [
          { algorithm: 'oauth2', url: metadataUrl(url, 'oauth2') },
          { algorithm: 'oidc', url: metadataUrl(url, 'oidc') },
        ];
    for (const attempt of attempts) {
      try {
        return await oidc.discovery(url, clientId, undefined, options.clientAuth, { ...options.discovery, algorithm: attempt.algorithm });
      } catch (error) {
        const status = answerStatus(error);
        if (status === 404 || status === 410) continue;
        if (error instanceof oidc.ClientError && error.code === 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED') {
          const named = ((error as { cause?: { body?: { issuer?: unknown } } }).cause?.body?.issuer as string | undefined) ?? 'another issuer';
          throw new TokenRequestError(`the metadata at ${attempt.url} names the issuer ${named}, not ${url.href}: set ISSUER to exactly that`, 'issuer_mismatch', undefined, false, { cause: error });
        }
        throw toTokenRequestError(error, { name: 'authorization server metadata', url: attempt.url });
      }
    }
    throw new TokenRequestError(
      `no authorization server metadata at ${attempts.map((attempt) => attempt.url).join(' or ')} (404): check ISSUER`,
      'metadata_not_found',
      404,
      false,
    );
  }

  async #runDiscovery(): Promise<Discovered> {
    const { issuer, clientSecret, clientKey } = this.#options;
    const authMethod = this.#options.authMethod ?? (clientKey ? 'private_key_jwt' : 'client_secret_basic');
    // Built per request from the current secret or key, so a rotated one takes effect without a restart.
    const clientAuth: oidc.ClientAuth = (as, client, body, headers) => {
      if (authMethod === 'private_key_jwt') {
        if (!clientKey) throw new TokenRequestError('private_key_jwt needs a client key', 'invalid_configuration', undefined, false);
        // openid-client's assertion signer is asynchronous; its ClientAuth type does not say so.
        return (async () => oidc.PrivateKeyJwt(await clientKey())(as, client, body, headers))() as unknown as void;
      }
      if (!clientSecret) throw new TokenRequestError(`${authMethod} needs a client secret`, 'invalid_configuration', undefined, false);
      const withSecret = authMethod === 'client_secret_post' ? oidc.ClientSecretPost(clientSecret()) : oidc.ClientSecretBasic(clientSecret());
      withSecret(as, client, body, headers);
    };
    const url = new URL(issuer);
    const configuration = await this.#fetchMetadata(url, {
      clientAuth,
      discovery: {
        ...(url.protocol === 'http:' ? { execute: [oidc.allowInsecureRequests] } : {}),
        ...(this.#options.fetch ? { [oidc.customFetch]: this.#options.fetch } : {}),
      },
    });
    if (this.#options.fetch) configuration[oidc.customFetch] = this.#options.fetch;
    const key = this.#options.dpop;
    if (!key) return { configuration, dpop: undefined };
    const supported = configuration.serverMetadata().dpop_signing_alg_values_supported;
    if (supported !== undefined && !supported.includes(key.alg)) {
      throw new TokenRequestError(
        `the authorization server at ${configuration.serverMetadata().issuer} accepts DPoP proofs signed with ${supported.join(', ') || 'no alg'}, not ${key.alg}: use a key of one of those`,
        'dpop_not_supported',
        undefined,
        false,
      );
    }
    return { configuration, dpop: oidc.getDPoPHandle(configuration, key.keyPair) };
  }
}

/** Where openid-client looks for each kind of metadata (RFC 8414 section 3.1 inserts, OpenID Discovery appends). */
function metadataUrl(issuer: URL, algorithm: 'oauth2' | 'oidc'): string {
  const path = issuer.pathname === '/' ? '' : issuer.pathname.replace(/\/$/, '');
  return algorithm === 'oauth2' ? `${issuer.origin}/.well-known/oauth-authorization-server${path}` : `${issuer.origin}${path}/.well-known/openid-configuration`;
}

/** The HTTP status of an answer openid-client rejected as not conform (it keeps the Response as the cause). */
function answerStatus(error: unknown): number | undefined {
  const cause = (error as { cause?: unknown } | null)?.cause;
  return cause instanceof Response ? cause.status : undefined;
}
