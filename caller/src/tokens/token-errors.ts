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
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Normalises openid-client's errors; never includes request bodies, so no secret leaks. */
export function toTokenRequestError(error: unknown): TokenRequestError {
  if (error instanceof TokenRequestError) return error;
  if (error instanceof ResponseBodyError) {
    return oauthError(error.error, error.status, error.error_description);
  }
  if (error instanceof WWWAuthenticateChallengeError) {
    const parameters = error.cause[0]?.parameters;
    return oauthError(parameters?.error ?? 'invalid_client', error.status, parameters?.error_description);
  }
  const message = error instanceof Error ? error.message : String(error);
  return new TokenRequestError(`token endpoint unreachable: ${message}`, 'network_error', undefined, true, { cause: error });
}

function oauthError(code: string, status: number, description: string | undefined): TokenRequestError {
  const permanent = PERMANENT_OAUTH_ERRORS.has(code);
  const text = description ? `${code}: ${description}` : code;
  return new TokenRequestError(`token request refused (${status} ${text})`, code, status, !permanent && (status === 429 || status >= 500));
}
