import { createHash, timingSafeEqual } from 'node:crypto';
import { Hono, type Context } from 'hono';
import type { Logger } from '@m2m/common';
import type { AuthMetrics } from '../metrics.js';
import { OperationError, type AuthOperations } from '../operations.js';

export interface AdminStats {
  tokenRequests: number;
  tokensIssued: number;
  jwksRequests: number;
}

const digest = (value: string) => createHash('sha256').update(value).digest();

/**
 * The admin API (JSON). Every route needs `Authorization: Bearer <ADMIN_TOKEN>`,
 * compared in constant time; main.ts also binds it to loopback by default. Except
 * `GET /metrics` (Prometheus text, counters only): a scraper needs no admin power.
 */
export function buildAdminApp(deps: { operations: AuthOperations; adminToken: string; stats: () => AdminStats; logger: Logger; metrics?: AuthMetrics }): Hono {
  const app = new Hono();
  const expected = digest(deps.adminToken);

  const { metrics } = deps;
  if (metrics) app.get('/metrics', async (c) => c.body(await metrics.registry.metrics(), 200, { 'content-type': metrics.registry.contentType }));

  app.use(async (c, next) => {
    const presented = c.req.header('authorization')?.match(/^Bearer (\S+)$/)?.[1];
    if (!presented || !timingSafeEqual(digest(presented), expected)) {
      deps.logger.warn({ event: 'admin.unauthorized', path: c.req.path }, 'admin request without a valid admin token');
      return c.json({ error: 'unauthorized' }, 401, { 'www-authenticate': 'Bearer realm="auth-server-admin"' });
    }
    await next();
  });

  const body = async (c: Context): Promise<Record<string, unknown>> => {
    const text = await c.req.text();
    if (text === '') return {};
    try {
      return JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new OperationError('the body is not JSON', 400);
    }
  };

  app.get('/keys', (c) => c.json({ keys: deps.operations.listKeys() }));
  app.post('/keys/rotate', async (c) => c.json({ keys: await deps.operations.rotateKeys({ force: (await body(c))['force'] === true }) }));
  app.post('/keys/:kid/revoke', async (c) => c.json({ keys: await deps.operations.revokeKey(c.req.param('kid')) }));
  app.get('/clients', (c) => c.json({ clients: deps.operations.listClients() }));
  app.post('/clients', async (c) => c.json(await deps.operations.registerClient(await body(c)), 201));
  app.post('/clients/:id/secret/rotate', async (c) => {
    const overlap = (await body(c))['overlap_seconds'] ?? 300;
    return c.json(await deps.operations.rotateClientSecret(c.req.param('id'), overlap as number));
  });
  app.post('/clients/:id/secret/retire-previous', async (c) => c.json(await deps.operations.retirePreviousSecret(c.req.param('id'))));
  app.patch('/clients/:id', async (c) => c.json(await deps.operations.updateClient(c.req.param('id'), await body(c))));
  app.get('/stats', (c) => c.json(deps.stats()));

  app.notFound((c) => c.json({ error: 'not_found' }, 404));
  app.onError((error, c) => {
    if (error instanceof OperationError) return c.json({ error: error.message }, error.status);
    deps.logger.error({ err: error }, 'admin operation failed');
    return c.json({ error: 'internal error' }, 500);
  });
  return app;
}
