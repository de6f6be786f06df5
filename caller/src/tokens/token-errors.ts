import { ResponseBodyError, WWWAuthenticateChallengeError } from 'openid-client';

/** OAuth error codes that retrying cannot fix (RFC 6749 section 5.2). */
const PERMANENT_OAUTH_ERRORS = new Set(['invalid_client', 'invalid_scope', 'unauthorized_client', 'invalid_request', 'invalid_grant', 'unsupported_grant_type', 'invalid_target']);

/** The token endpoint refused or could not be reached; `code` is the OAuth error code when there is one. */
export class TokenRequestError extends Error {
  override name = 'TokenRequestError';

  constructor(
    message: string,
    /**
     * OAuth error code (`invalid_client`, …), or `network_error` / `server_error`; for
     * configuration the server cannot fix: `metadata_not_found` (no RFC 8414 or OpenID
     * metadata at the issuer), `issuer_mismatch`, `insecure_transport`, `dpop_not_supported`
     * (a DPoP key the authorization server does not take, or a bearer token where a bound one
     * was asked for).
     */
    readonly code: string,
    /** HTTP status of the token endpoint's answer, if it answered. */
    readonly status: number | undefined,
    /** False for errors that a retry cannot fix (bad credentials, scope not allowed). */
    readonly retryable: boolean,
    options?: { cause?: unknown; retryAfter?: string | null },
  ) {
    super(message, options);
    this.retryAfter = options?.retryAfter ?? null;
  }

  /** The token endpoint's Retry-After header, if it sent one. */
  readonly retryAfter: string | null;
}

/**
 * Normalises openid-client's errors; never includes request bodies, so no secret leaks.
 * `endpoint` names what was asked, and where, in the messages about an unexpected answer or none.
 */
export function toTokenRequestError(error: unknown, endpoint: { name: string; url?: string | undefined } = { name: 'token endpoint' }): TokenRequestError {
  if (error instanceof TokenRequestError) return error;
  if (error instanceof ResponseBodyError) {
    return oauthError(error.error, error.status, error.error_description, error.response.headers.get('retry-after'));
  }
  if (error instanceof WWWAuthenticateChallengeError) {
    const parameters = error.cause[0]?.parameters;
    return oauthError(parameters?.error ?? 'invalid_client', error.status, parameters?.error_description, null);
  }
  // A non-JSON error answer (a proxy's 502 page, say): openid-client keeps the Response as the cause.
  const cause = (error as { cause?: unknown } | null)?.cause;
  if (cause instanceof Response) {
    const retryable = cause.status === 429 || cause.status >= 500;
    return new TokenRequestError(`${endpoint.name}${endpoint.url ? ` at ${endpoint.url}` : ''} answered ${cause.status}`, retryable ? 'server_error' : 'invalid_response', cause.status, retryable, { cause: error, retryAfter: cause.headers.get('retry-after') });
  }
  return new TokenRequestError(`${endpoint.name} unreachable${endpoint.url ? ` at ${endpoint.url}` : ''}: ${networkCause(error)}`, 'network_error', undefined, true, { cause: error });
}

/**
 * The reason under fetch's `TypeError: fetch failed`: `connect ECONNREFUSED 127.0.0.1:9000`,
 * `getaddrinfo ENOTFOUND auth.example`; for `localhost` (tried on ::1 and 127.0.0.1) an AggregateError with one per address.
 */
export function networkCause(error: unknown): string {
  let cause: unknown = error;
  while (cause instanceof Error && cause.cause instanceof Error) cause = cause.cause;
  if (cause instanceof AggregateError && cause.errors.length > 0) cause = cause.errors[0];
  if (!(cause instanceof Error)) return String(cause);
  return cause.message || (cause as NodeJS.ErrnoException).code || cause.name;
}

/** oidc-provider's refusal of a token request without a proof from a client registered to require DPoP. */
const DPOP_REQUIRED = /DPoP proof JWT not provided/;

function oauthError(code: string, status: number, description: string | undefined, retryAfter: string | null): TokenRequestError {
  const permanent = PERMANENT_OAUTH_ERRORS.has(code);
  let text = description ? `${code}: ${description}` : code;
  if (description && DPOP_REQUIRED.test(description)) text += '; this client is registered to use DPoP: give it a key (the caller CLI: --dpop or CLIENT_DPOP=true)';
  return new TokenRequestError(`token request refused (${status} ${text})`, code, status, !permanent && (status === 429 || status >= 500), { retryAfter });
}
