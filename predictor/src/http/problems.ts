import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';

/**
 * Every error that crosses the HTTP boundary, in one place: RFC 9457 problem details,
 * with the RFC 6750 `WWW-Authenticate` challenge for authentication failures.
 * Handlers and middleware throw these; `problemResponse` renders them.
 */

export const REALM = 'predictor';
/** Every problem's `type` is this URN followed by its slug (`urn:m2m-inference:problem:rate-limited`). */
export const TYPE_BASE = 'urn:m2m-inference:problem:';

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  [extension: string]: unknown;
}

export class HttpProblem extends Error {
  override name = 'HttpProblem';
  readonly headers: Record<string, string>;
  /** An authentication problem's challenge; `renderProblem` writes it for the schemes the predictor accepts. */
  readonly challenge: Challenge | undefined;

  constructor(
    readonly status: number,
    readonly slug: string,
    readonly title: string,
    readonly detail: string,
    options: { headers?: Record<string, string>; extensions?: Record<string, unknown>; challenge?: Challenge } = {},
  ) {
    super(detail);
    this.challenge = options.challenge;
    // Without the server's options (a unit test of one module): the Bearer challenge alone.
    this.headers = { ...(options.challenge ? { 'www-authenticate': wwwAuthenticate(options.challenge, 'Bearer', {}) } : {}), ...options.headers };
    this.extensions = options.extensions ?? {};
  }

  readonly extensions: Record<string, unknown>;

  toBody(): ProblemBody {
    return { type: `${TYPE_BASE}${this.slug}`, title: this.title, status: this.status, detail: this.detail, ...this.extensions };
  }
}

/** The schemes of `Authorization` the predictor accepts (RFC 6750, RFC 9449). */
export type AuthScheme = 'Bearer' | 'DPoP';

/** What an authentication problem tells the client in `WWW-Authenticate`. */
export interface Challenge {
  /** RFC 6750 section 3.1 / RFC 9449 section 7.1 error code; absent: no credentials, or of another scheme. */
  error?: string;
  description?: string;
  scope?: string;
  /** The error belongs to this scheme whatever the request used (`invalid_dpop_proof`, `use_dpop_nonce`). */
  scheme?: AuthScheme;
}

export interface ChallengeOptions {
  /** RFC 9728 section 5.1: where the protected-resource metadata is (`resource_metadata`). */
  resourceMetadataUrl?: string | undefined;
  /** The `algs` of the DPoP challenge (RFC 9449 section 7.1); undefined: DPoP is not offered. */
  dpopAlgorithms?: readonly string[] | undefined;
}

const quoted = (name: string, value: string) => `${name}="${value.replace(/["\\]/g, '')}"`;

/**
 * The `WWW-Authenticate` value: one challenge per accepted scheme (RFC 9110 section 11.6.1),
 * the error on the scheme the request used (or the one the error belongs to), the other
 * scheme bare, so a client learns it may use either. Each names the resource metadata.
 */
export function wwwAuthenticate(challenge: Challenge, usedScheme: AuthScheme, options: ChallengeOptions): string {
  const errorScheme = challenge.scheme ?? usedScheme;
  const schemes: AuthScheme[] = options.dpopAlgorithms ? ['Bearer', 'DPoP'] : ['Bearer'];
  if (!schemes.includes(errorScheme)) schemes.push(errorScheme);
  return schemes
    .map((scheme) => {
      const params = [quoted('realm', REALM)];
      if (scheme === errorScheme && challenge.error) {
        params.push(quoted('error', challenge.error));
        if (challenge.scope) params.push(quoted('scope', challenge.scope));
        if (challenge.description) params.push(quoted('error_description', challenge.description));
      }
      if (scheme === 'DPoP' && options.dpopAlgorithms) params.push(quoted('algs', options.dpopAlgorithms.join(' ')));
      if (options.resourceMetadataUrl) params.push(quoted('resource_metadata', options.resourceMetadataUrl));
      return `${scheme} ${params.join(', ')}`;
    })
    .join(', ');
}

/** No credentials at all: the challenge carries no error code (RFC 6750 section 3.1). */
export class MissingCredentials extends HttpProblem {
  constructor() {
    super(401, 'missing-credentials', 'Authentication required', 'Send an access token: Authorization: Bearer <token>, or Authorization: DPoP <token> with a DPoP proof.', {
      challenge: {},
    });
  }
}

/**
 * Credentials of another scheme (Basic, Digest…): RFC 6750 section 3.1 says the challenge
 * then carries no error code, as when no credentials were sent.
 */
export class UnsupportedAuthScheme extends HttpProblem {
  constructor(scheme: string) {
    super(401, 'unsupported-authentication-scheme', 'Authentication required', `The authorization scheme "${scheme}" is not supported; send Authorization: Bearer <token> or DPoP <token>.`, {
      challenge: {},
    });
  }
}

export class InvalidToken extends HttpProblem {
  constructor(detail: string, options: { scheme?: AuthScheme } = {}) {
    super(401, 'invalid-token', 'Invalid access token', detail, {
      challenge: { error: 'invalid_token', description: detail, ...(options.scheme ? { scheme: options.scheme } : {}) },
    });
  }
}

/** RFC 9449 section 7.1: the DPoP proof is missing, malformed or does not fit this request. */
export class InvalidDpopProof extends HttpProblem {
  constructor(detail: string) {
    super(401, 'invalid-dpop-proof', 'Invalid DPoP proof', detail, { challenge: { error: 'invalid_dpop_proof', description: detail, scheme: 'DPoP' } });
  }
}

/** RFC 9449 section 9: the proof must carry the nonce in `DPoP-Nonce` (a new one, or the first). */
export class UseDpopNonce extends HttpProblem {
  constructor(nonce: string, detail = 'The DPoP proof must carry the nonce this server provides in DPoP-Nonce.') {
    super(401, 'use-dpop-nonce', 'DPoP nonce required', detail, {
      challenge: { error: 'use_dpop_nonce', description: detail, scheme: 'DPoP' },
      headers: { 'dpop-nonce': nonce },
    });
  }
}

/** A malformed Authorization header (RFC 6750 section 3.1 `invalid_request`). */
export class InvalidAuthorizationRequest extends HttpProblem {
  constructor(detail: string) {
    super(400, 'invalid-request', 'Malformed credentials', detail, {
      challenge: { error: 'invalid_request', description: detail },
    });
  }
}

export class InsufficientScope extends HttpProblem {
  constructor(requiredScope: string) {
    const detail = `This route needs the scope "${requiredScope}".`;
    super(403, 'insufficient-scope', 'Insufficient scope', detail, {
      challenge: { error: 'insufficient_scope', scope: requiredScope, description: detail },
      extensions: { required_scope: requiredScope },
    });
  }
}

/** The signing keys cannot be obtained: not the caller's fault, so never a 401. */
export class KeysUnavailable extends HttpProblem {
  constructor(retryAfterSeconds: number) {
    super(503, 'keys-unavailable', 'Token verification unavailable', 'The signing keys of the authorization server cannot be fetched; retry later.', {
      headers: { 'retry-after': String(retryAfterSeconds) },
    });
  }
}

export class NotReady extends HttpProblem {
  constructor(detail: string, stores?: Record<string, string>) {
    super(503, 'not-ready', 'Not ready', detail, { headers: { 'retry-after': '1' }, ...(stores ? { extensions: { stores } } : {}) });
  }
}

export class PayloadTooLarge extends HttpProblem {
  constructor(limitBytes: number) {
    super(413, 'payload-too-large', 'Payload too large', `The request body exceeds ${limitBytes} bytes.`, {
      extensions: { limit_bytes: limitBytes },
    });
  }
}

export class UnsupportedMediaType extends HttpProblem {
  constructor() {
    super(415, 'unsupported-media-type', 'Unsupported media type', 'Send the body as application/json.');
  }
}

/** The connection closed or failed before the whole body arrived: nobody reads this answer, but the log and metrics count it. */
export class IncompleteBody extends HttpProblem {
  constructor() {
    super(400, 'incomplete-body', 'Incomplete body', 'The connection ended before the whole request body arrived.');
  }
}

export class MalformedJson extends HttpProblem {
  constructor() {
    super(400, 'malformed-json', 'Malformed JSON', 'The request body is not valid JSON.');
  }
}

export interface FieldError {
  /** JSON Pointer (RFC 6901) to the failing value. */
  pointer: string;
  detail: string;
}

export class ValidationFailed extends HttpProblem {
  constructor(errors: FieldError[]) {
    super(422, 'validation-failed', 'Invalid request body', errors.map((error) => `${error.pointer || '/'}: ${error.detail}`).slice(0, 5).join('; '), {
      extensions: { errors },
    });
  }
}

/** 429: names the violated policy (draft-ietf-httpapi-ratelimit-headers); Retry-After comes with the rate-limit headers. */
export class RateLimited extends HttpProblem {
  constructor(violation: { policy: string; limit: number; windowSeconds: number; retryAfterSeconds: number }) {
    super(429, 'rate-limited', 'Too many requests', `The "${violation.policy}" policy (${violation.limit} per ${violation.windowSeconds} s) is exhausted; retry in ${violation.retryAfterSeconds} s.`, {
      headers: { 'retry-after': String(violation.retryAfterSeconds) },
      extensions: { violated_policy: violation.policy, limit: violation.limit, window_seconds: violation.windowSeconds, retry_after_seconds: violation.retryAfterSeconds },
    });
  }
}

export class InvalidIdempotencyKey extends HttpProblem {
  constructor() {
    super(400, 'invalid-idempotency-key', 'Invalid Idempotency-Key', 'An Idempotency-Key must be 1 to 255 printable ASCII characters.');
  }
}

/**
 * Two `Idempotency-Key` field lines: joined they would read as one key ("a, b"), and neither
 * is the key the client meant, so the request is refused rather than executed.
 */
export class RepeatedIdempotencyKey extends HttpProblem {
  constructor(fieldLines: number) {
    super(400, 'idempotency-key-repeated', 'Idempotency-Key sent more than once', `Send one Idempotency-Key header field; this request has ${fieldLines}.`, {
      extensions: { header: 'Idempotency-Key' },
    });
  }
}

export class IdempotencyKeyRequired extends HttpProblem {
  constructor() {
    super(400, 'idempotency-key-required', 'Idempotency-Key required', 'This server requires an Idempotency-Key header on POST /v1/predict.');
  }
}

/** The same key and request is still executing: retry after it completes. */
export class IdempotencyKeyInFlight extends HttpProblem {
  constructor(retryAfterSeconds: number) {
    super(409, 'idempotency-key-in-flight', 'Request in progress', 'A request with this Idempotency-Key is still being processed; retry with the same key.', {
      headers: { 'retry-after': String(retryAfterSeconds) },
    });
  }
}

/**
 * This request's lease on its key was taken over while it ran (it stalled past the lease), so
 * its result is neither stored nor sent: the retry gets the successor's answer, the only one.
 */
export class IdempotencyLeaseLost extends HttpProblem {
  constructor() {
    super(503, 'idempotency-lease-lost', 'Superseded', 'This request took too long and another attempt with the same Idempotency-Key took over; retry with the same key to get its answer.', {
      headers: { 'retry-after': '1' },
    });
  }
}

export class IdempotencyKeyReused extends HttpProblem {
  constructor() {
    super(422, 'idempotency-key-reused', 'Idempotency-Key reused', 'This Idempotency-Key was used for a different request; use a new key for a new request.');
  }
}

/** A backing store (idempotency, API keys) failed: fail closed, never execute unprotected. */
export class StoreUnavailable extends HttpProblem {
  constructor(store: string, options?: { cause?: unknown }) {
    super(503, 'store-unavailable', 'Temporarily unavailable', `The ${store} store is unavailable; retry later.`, { headers: { 'retry-after': '1' } });
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

export class NotFound extends HttpProblem {
  constructor(path: string) {
    super(404, 'not-found', 'Not found', `No route for ${path}.`);
  }
}

/** A known path, another method (RFC 9110 section 15.5.6): `Allow` lists the methods it answers. */
export class MethodNotAllowed extends HttpProblem {
  constructor(allowed: string[], path: string) {
    super(405, 'method-not-allowed', 'Method not allowed', `${path} answers ${allowed.join(', ')} only.`, { headers: { allow: allowed.join(', ') } });
  }
}

export class InternalError extends HttpProblem {
  constructor() {
    super(500, 'internal-error', 'Internal error', 'The request failed on our side; it is safe to retry.');
  }
}

/**
 * Renders through the context, so headers set earlier (X-Request-Id) are kept. With
 * `challenges`, an authentication problem's challenge offers every accepted scheme, the
 * error on `usedScheme` (the scheme of the request's Authorization, default Bearer).
 */
export function renderProblem(c: Context, problem: HttpProblem, challenges?: ChallengeOptions & { usedScheme?: AuthScheme | undefined }): Response {
  for (const [name, value] of Object.entries(problem.headers)) c.header(name, value);
  if (problem.challenge && challenges) c.header('www-authenticate', wwwAuthenticate(problem.challenge, challenges.usedScheme ?? 'Bearer', challenges));
  c.header('content-type', 'application/problem+json');
  return c.body(JSON.stringify(problem.toBody()), problem.status as ContentfulStatusCode);
}
