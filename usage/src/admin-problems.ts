import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';

/**
 * Every error the usage admin API answers with, in one place: RFC 9457 problem details, with
 * the RFC 6750 `WWW-Authenticate` challenge on a 401. Handlers throw these; `renderProblem`
 * renders them.
 */

export const ADMIN_REALM = 'usage-admin';
const TYPE_BASE = 'urn:m2m-inference:problem:';

export class HttpProblem extends Error {
  override name = 'HttpProblem';
  readonly headers: Record<string, string>;

  constructor(
    readonly status: number,
    readonly slug: string,
    readonly title: string,
    readonly detail: string,
    options: { headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(detail, options.cause === undefined ? undefined : { cause: options.cause });
    this.headers = options.headers ?? {};
  }

  toBody(): { type: string; title: string; status: number; detail: string } {
    return { type: `${TYPE_BASE}${this.slug}`, title: this.title, status: this.status, detail: this.detail };
  }
}

/** No usable credentials: the challenge carries no error code (RFC 6750 section 3.1). */
export class AdminTokenRequired extends HttpProblem {
  constructor() {
    super(401, 'missing-credentials', 'Authentication required', 'Send the admin token: Authorization: Bearer <ADMIN_TOKEN>.', {
      headers: { 'www-authenticate': `Bearer realm="${ADMIN_REALM}"` },
    });
  }
}

export class InvalidAdminToken extends HttpProblem {
  constructor() {
    super(401, 'invalid-token', 'Invalid admin token', 'The bearer token is not the admin token.', {
      headers: { 'www-authenticate': `Bearer realm="${ADMIN_REALM}", error="invalid_token"` },
    });
  }
}

export class InvalidQuery extends HttpProblem {
  constructor(detail: string) {
    super(400, 'invalid-query', 'Invalid query', detail);
  }
}

export class LedgerUnavailable extends HttpProblem {
  constructor(cause?: unknown) {
    super(503, 'ledger-unavailable', 'Usage ledger unavailable', 'The usage ledger cannot be read right now; retry later.', {
      headers: { 'retry-after': '1' },
      cause,
    });
  }
}

export class NotFound extends HttpProblem {
  constructor(path: string) {
    super(404, 'not-found', 'Not found', `No route for ${path}.`);
  }
}

export class MethodNotAllowed extends HttpProblem {
  constructor(allowed: string[]) {
    super(405, 'method-not-allowed', 'Method not allowed', `Use ${allowed.join(', ')}.`, { headers: { allow: allowed.join(', ') } });
  }
}

export class InternalError extends HttpProblem {
  constructor() {
    super(500, 'internal-error', 'Internal error', 'The request failed on our side.');
  }
}

export function renderProblem(c: Context, problem: HttpProblem): Response {
  for (const [name, value] of Object.entries(problem.headers)) c.header(name, value);
  c.header('content-type', 'application/problem+json');
  return c.body(JSON.stringify(problem.toBody()), problem.status as ContentfulStatusCode);
}
