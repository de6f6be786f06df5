import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';

/**
 * Every error that crosses the HTTP boundary, in one place: RFC 9457 problem details,
 * with the RFC 6750 `WWW-Authenticate` challenge for authentication failures.
 * Handlers and middleware throw these; `problemResponse` renders them.
 */

export const REALM = 'predictor';
const TYPE_BASE = 'urn:m2m-inference:problem:';

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

  constructor(
    readonly status: number,
    readonly slug: string,
    readonly title: string,
    readonly detail: string,
    options: { headers?: Record<string, string>; extensions?: Record<string, unknown> } = {},
  ) {
    super(detail);
    this.headers = options.headers ?? {};
    this.extensions = options.extensions ?? {};
  }

  readonly extensions: Record<string, unknown>;

  toBody(): ProblemBody {
    return { type: `${TYPE_BASE}${this.slug}`, title: this.title, status: this.status, detail: this.detail, ...this.extensions };
  }
}

/** RFC 6750 section 3: quoted-string values of a Bearer challenge. */
function bearerChallenge(attributes: Record<string, string>): string {
  const quoted = Object.entries(attributes).map(([name, value]) => `${name}="${value.replace(/["\\]/g, '')}"`);
  return ['Bearer ' + `realm="${REALM}"`, ...quoted].join(', ');
}

/** No credentials at all: the challenge carries no error code (RFC 6750 section 3.1). */
export class MissingCredentials extends HttpProblem {
  constructor() {
    super(401, 'missing-credentials', 'Authentication required', 'Send an access token: Authorization: Bearer <token>.', {
      headers: { 'www-authenticate': bearerChallenge({}) },
    });
  }
}

/**
 * Credentials of another scheme (Basic, Digest…): RFC 6750 section 3.1 says the challenge
 * then carries no error code, as when no credentials were sent.
 */
export class UnsupportedAuthScheme extends HttpProblem {
  constructor(scheme: string) {
    super(401, 'unsupported-authentication-scheme', 'Authentication required', `The authorization scheme "${scheme}" is not supported; send Authorization: Bearer <token>.`, {
      headers: { 'www-authenticate': bearerChallenge({}) },
    });
  }
}

export class InvalidToken extends HttpProblem {
  constructor(detail: string) {
    super(401, 'invalid-token', 'Invalid access token', detail, {
      headers: { 'www-authenticate': bearerChallenge({ error: 'invalid_token', error_description: detail }) },
    });
  }
}

/** A malformed Authorization header (RFC 6750 section 3.1 `invalid_request`). */
export class InvalidAuthorizationRequest extends HttpProblem {
  constructor(detail: string) {
    super(400, 'invalid-request', 'Malformed credentials', detail, {
      headers: { 'www-authenticate': bearerChallenge({ error: 'invalid_request', error_description: detail }) },
    });
  }
}

export class InsufficientScope extends HttpProblem {
  constructor(requiredScope: string) {
    const detail = `This route needs the scope "${requiredScope}".`;
    super(403, 'insufficient-scope', 'Insufficient scope', detail, {
      headers: {
        'www-authenticate': bearerChallenge({ error: 'insufficient_scope', scope: requiredScope, error_description: detail }),
      },
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

/** Renders through the context, so headers set earlier (X-Request-Id) are kept. */
export function renderProblem(c: Context, problem: HttpProblem): Response {
  for (const [name, value] of Object.entries(problem.headers)) c.header(name, value);
  c.header('content-type', 'application/problem+json');
  return c.body(JSON.stringify(problem.toBody()), problem.status as ContentfulStatusCode);
}
