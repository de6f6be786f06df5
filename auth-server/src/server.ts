import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type Provider from 'oidc-provider';
import type { Logger } from '@m2m/common';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** RFC 8414 metadata: oidc-provider serves only the OpenID name, with the same content. */
const METADATA_ALIASES = new Map([['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']]);

/**
 * The listener outlives any one Provider: oidc-provider fixes its keystore at
 * construction, so key rotation builds a new Provider and swaps it in here; requests
 * already dispatched finish on the old one.
 */
export class AuthHttpServer {
  readonly server: Server;
  #handler: Handler | undefined;
  #tokenRequests = 0;
  #jwksRequests = 0;

  constructor(private readonly logger: Logger) {
    this.server = createServer((req, res) => this.#dispatch(req, res));
    // Machine clients keep connections alive; stuck ones must not hold sockets forever.
    this.server.requestTimeout = 30_000;
    this.server.headersTimeout = 10_000;
    this.server.keepAliveTimeout = 5_000;
  }

  use(provider: Provider): void {
    this.#handler = provider.callback() as Handler;
  }

  /** Requests to the token endpoint, whatever their outcome. */
  get tokenRequests(): number {
    return this.#tokenRequests;
  }

  /** Requests for the JWKS (resource servers refreshing their keys). */
  get jwksRequests(): number {
    return this.#jwksRequests;
  }

  async listen(port: number, host?: string): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
  }

  #dispatch(req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now();
    const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
    const alias = METADATA_ALIASES.get(path);
    if (alias) req.url = alias;
    if (path === '/token') this.#tokenRequests += 1;
    if (path === '/jwks') this.#jwksRequests += 1;
    res.on('finish', () => {
      this.logger.info(
        { method: req.method, path, status: res.statusCode, durationMs: Math.round((performance.now() - started) * 10) / 10 },
        'request',
      );
    });
    if (path === '/healthz') {
      res.writeHead(this.#handler ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: this.#handler ? 'ok' : 'starting' }));
      return;
    }
    if (!this.#handler) {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' });
      res.end(JSON.stringify({ error: 'temporarily_unavailable', error_description: 'starting up' }));
      return;
    }
    this.#handler(req, res);
  }
}
