import { createMiddleware } from 'hono/factory';
import { routePath } from 'hono/route';
import type { Logger } from '@m2m/common';
import type { AppEnv } from './app-env.js';
import type { Metrics } from './metrics.js';

/**
 * One structured log line and the metrics of every request. It logs the principal's
 * identity and the decisions taken, never headers or bodies: credentials cannot reach
 * the log through this line.
 */
export function observeRequests(logger: Logger, metrics: Metrics) {
  return createMiddleware<AppEnv>(async function observeRequest(c, next) {
    const started = performance.now();
    await next();
    const seconds = (performance.now() - started) / 1000;
    const status = c.res.status;
    const route = c.res.status === 404 ? 'unmatched' : routePath(c, -1);
    metrics.requests.inc({ route, method: c.req.method, status });
    metrics.requestDuration.observe({ route, method: c.req.method }, seconds);
    const { principal, rateLimit, idempotency } = c.var;
    logger[status >= 500 ? 'error' : 'info'](
      {
        requestId: c.var.requestId,
        method: c.req.method,
        route,
        status,
        durationMs: Math.round(seconds * 100_000) / 100,
        clientId: principal?.clientId,
        authMethod: principal?.authMethod,
        kid: principal?.keyId,
        idempotencyKey: c.req.header('idempotency-key')?.slice(0, 100),
        rateLimit: rateLimit && { allowed: rateLimit.allowed, violated: rateLimit.violated, remaining: rateLimit.policies.map((policy) => policy.remaining) },
        idempotency,
      },
      'request',
    );
  });
}
