import { Hono } from 'hono';
import type { Logger } from '@m2m/common';
import type { Metrics } from './metrics.js';
import { InternalError, renderProblem } from './problems.js';
import { answerUnmatched } from './unmatched.js';

/**
 * `GET /metrics` (Prometheus text format) on a listener of its own (METRICS_PORT, loopback by
 * default): the API port, which faces clients, does not serve it. No credential: whoever can
 * reach this listener may read the counters, so where it listens is the access control.
 */
export function buildMetricsApp(deps: { metrics: Metrics; logger: Logger }): Hono {
  const app = new Hono();
  const { registry } = deps.metrics;
  app.get('/metrics', async (c) => c.body(await registry.metrics(), 200, { 'content-type': registry.contentType }));
  app.notFound(answerUnmatched(app.routes));
  app.onError((error, c) => {
    deps.logger.error({ err: error, path: c.req.path }, 'metrics request failed');
    return renderProblem(c, new InternalError());
  });
  return app;
}
