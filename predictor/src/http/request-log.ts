import { createMiddleware } from 'hono/factory';
import { routePath } from 'hono/route';
import type { Logger } from '@m2m/common';
import type { AppEnv } from './app-env.js';

/**
 * One structured line per request. It logs the principal's identity, never headers:
 * credentials cannot reach the log through this line.
 */
export function requestLog(logger: Logger, now: () => number) {
  return createMiddleware<AppEnv>(async function logRequest(c, next) {
    const started = now();
    await next();
    const status = c.res.status;
    const principal = c.var.principal;
    logger[status >= 500 ? 'error' : 'info'](
      {
        requestId: c.var.requestId,
        method: c.req.method,
        route: routePath(c),
        status,
        durationMs: Math.round((now() - started) * 100) / 100,
        clientId: principal?.clientId,
        authMethod: principal?.authMethod,
      },
      'request',
    );
  });
}
