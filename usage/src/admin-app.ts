import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from '@m2m/common';
import { Hono, type MiddlewareHandler } from 'hono';
import {
  AdminTokenRequired,
  HttpProblem,
  InternalError,
  InvalidAdminToken,
  InvalidQuery,
  LedgerUnavailable,
  MethodNotAllowed,
  NotFound,
  renderProblem,
} from './admin-problems.js';
import { checkUsageFilter, InvalidUsageFilter, type UsageFilter, type UsageLedger } from './ledger.js';
import { usageReport } from './report.js';

export interface UsageAdminDeps {
  ledger: UsageLedger;
  /** Every `/v1` route needs `Authorization: Bearer <adminToken>`. */
  adminToken: string;
  logger: Logger;
}

const QUERY_PARAMETERS: ReadonlyMap<string, keyof UsageFilter> = new Map([
  ['client', 'clientId'],
  ['day', 'day'],
]);

const digest = (value: string): Buffer => createHash('sha256').update(value).digest();

/**
 * The usage admin API: `GET /v1/usage?client=&day=` answers what `npm run usage -- report
 * --json` prints. `GET /healthz` needs no token (probes send none) and tells nothing but health.
 */
export function buildUsageAdminApp(deps: UsageAdminDeps): Hono {
  if (deps.adminToken === '') throw new RangeError('adminToken must not be empty');
  const app = new Hono();

  app.get('/healthz', async (c) => {
    if (!(await deps.ledger.healthy())) throw new LedgerUnavailable();
    return c.json({ status: 'ok' });
  });

  app.use('/v1/*', requireAdminToken(deps));

  app.get('/v1/usage', async (c) => {
    const filter = parseFilter(new URL(c.req.url).searchParams);
    let totals;
    try {
      totals = await deps.ledger.report(filter);
    } catch (error) {
      if (error instanceof InvalidUsageFilter) throw new InvalidQuery(error.message);
      throw new LedgerUnavailable(error);
    }
    c.header('cache-control', 'no-store');
    return c.json(usageReport(totals, filter));
  });
  app.all('/v1/usage', () => {
    throw new MethodNotAllowed(['GET']);
  });

  app.notFound((c) => renderProblem(c, new NotFound(c.req.path)));
  app.onError((error, c) => {
    if (error instanceof HttpProblem) {
      if (error.status >= 500) deps.logger.warn({ event: 'usage-admin.problem', problem: error.slug, cause: (error.cause as Error | undefined)?.message }, 'usage admin request failed');
      return renderProblem(c, error);
    }
    deps.logger.error({ err: error, path: c.req.path }, 'usage admin request failed');
    return renderProblem(c, new InternalError());
  });
  return app;
}

/** Compares SHA-256 digests, so the comparison takes the same time whatever the presented token's length. */
function requireAdminToken(deps: UsageAdminDeps): MiddlewareHandler {
  const expected = digest(deps.adminToken);
  return async function adminToken(c, next) {
    // The auth scheme is case-insensitive (RFC 9110 section 11.1).
    const presented = c.req.header('authorization')?.match(/^Bearer +(\S+)$/i)?.[1];
    if (presented === undefined || !timingSafeEqual(digest(presented), expected)) {
      deps.logger.warn({ event: 'usage-admin.unauthorized', path: c.req.path, presented: presented !== undefined }, 'usage admin request without a valid admin token');
      throw presented === undefined ? new AdminTokenRequired() : new InvalidAdminToken();
    }
    await next();
  };
}

/** `client` and `day`, each at most once; anything else is refused rather than silently ignored. */
function parseFilter(params: URLSearchParams): UsageFilter {
  const filter: UsageFilter = {};
  for (const name of new Set(params.keys())) {
    const key = QUERY_PARAMETERS.get(name);
    if (key === undefined) throw new InvalidQuery(`Unknown query parameter "${name}"; use client and day.`);
    const values = params.getAll(name);
    if (values.length > 1) throw new InvalidQuery(`Give "${name}" at most once.`);
    filter[key] = values[0]!;
  }
  try {
    return checkUsageFilter(filter);
  } catch (error) {
    if (error instanceof InvalidUsageFilter) throw new InvalidQuery(`${error.message[0]!.toUpperCase()}${error.message.slice(1)}.`);
    throw error;
  }
}
