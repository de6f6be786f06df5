import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve, type Http2Bindings, type HttpBindings } from '@hono/node-server';

/**
 * Serves the app with timeouts that cut off slow or stuck clients: the headers must
 * arrive within 10 s, the whole request within 30 s, and an idle keep-alive
 * connection is closed after 5 s.
 */
export async function listen(app: { fetch: (request: Request, env: HttpBindings | Http2Bindings) => Response | Promise<Response> }, port: number, host?: string): Promise<{ server: Server; port: number }> {
  const server = await new Promise<Server>((resolve, reject) => {
    const created = serve({ fetch: app.fetch, port, ...(host ? { hostname: host } : {}) }, () => resolve(created as Server)) as Server;
    created.once('error', reject);
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  return { server, port: (server.address() as AddressInfo).port };
}

/** Stops accepting, lets in-flight requests finish, then closes idle keep-alive sockets. */
export function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
