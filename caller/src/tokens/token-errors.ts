import { ResponseBodyError, WWWAuthenticateChallengeError } from 'openid-client';

/** OAuth error codes that retrying cannot fix (RFC 6749 section 5.2). */
const PERMANENT_OAUTH_ERRORS = new Set(['invalid_client', 'invalid_scope', 'unauthorized_client', 'invalid_request', 'invalid_grant', 'unsupported_grant_type', 'invalid_target']);

/** The token endpoint refused or could not be reached; `code` is the OAuth error code when there is one. */
export class TokenRequestError extends Error {
  override name = 'TokenRequestError';

  constructor(
    message: string,
    /** OAuth error code (`invalid_client`, …), or `network_error` / `server_error`. */
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

/** Normalises openid-client's errors; never includes request bodies, so no secret leaks. */
export function toTokenRequestError(error: unknown): TokenRequestError {
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
    return new TokenRequestError(`token endpoint answered ${cause.status}`, retryable ? 'server_error' : 'invalid_response', cause.status, retryable, { cause: error, retryAfter: cause.headers.get('retry-after') });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new TokenRequestError(`token endpoint unreachable: ${message}`, 'network_error', undefined, true, { cause: error });
}

function oauthError(code: string, status: number, description: string | undefined, retryAfter: string | null): TokenRequestError {
  const permanent = PERMANENT_OAUTH_ERRORS.has(code);
  const text = description ? `${code}: ${description}` : code;
  return new TokenRequestError(`token request refused (${status} ${text})`, code, status, !permanent && (status === 429 || status >= 500), { retryAfter });
}
