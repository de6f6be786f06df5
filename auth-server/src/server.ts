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

  /**
   * @param defaultScope the scope to grant a client whose token request names none
   *   (RFC 6749 section 3.3 lets the server pick a default: here, the registered scopes).
   */
  constructor(
    private readonly logger: Logger,
    private readonly defaultScope: (clientId: string) => string | undefined = () => undefined,
  ) {
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
    const handler = this.#handler;
    if (path === '/token' && req.method === 'POST' && /^application\/x-www-form-urlencoded/i.test(req.headers['content-type'] ?? '')) {
      this.#withDefaultScope(req).then(
        () => handler(req, res),
        () => {
          res.writeHead(400, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: 'invalid_request', error_description: 'the request body could not be read' }));
        },
      );
      return;
    }
    handler(req, res);
  }

  /**
   * oidc-provider grants no scope when the request names none. Reads the (small) form
   * body, adds the client's registered scopes when `scope` is absent, and leaves the
   * parsed body on `req.body`, which oidc-provider uses when the stream was consumed.
   */
  async #withDefaultScope(req: IncomingMessage): Promise<void> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > 56 * 1024) throw new Error('token request body too large');
      chunks.push(chunk as Buffer);
    }
    const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
    if (form['scope'] === undefined && form['grant_type'] === 'client_credentials') {
      const clientId = clientIdOf(req.headers.authorization, form);
      const scope = clientId === undefined ? undefined : this.defaultScope(clientId);
      if (scope) form['scope'] = scope;
    }
    (req as IncomingMessage & { body?: unknown }).body = form;
  }
}

/** The client a token request claims to be (authentication itself is oidc-provider's job). */
function clientIdOf(authorization: string | undefined, form: Record<string, string>): string | undefined {
  const basic = authorization?.match(/^Basic\s+(\S+)$/i)?.[1];
  if (basic) {
    const decoded = Buffer.from(basic, 'base64').toString('utf8');
    const separator = decoded.indexOf(':');
    return separator > 0 ? decodeURIComponent(decoded.slice(0, separator).replace(/\+/g, ' ')) : undefined;
  }
  if (form['client_id']) return form['client_id'];
  const assertion = form['client_assertion']?.split('.')[1];
  if (!assertion) return undefined;
  try {
    const payload = JSON.parse(Buffer.from(assertion, 'base64url').toString('utf8')) as { sub?: unknown };
    return typeof payload.sub === 'string' ? payload.sub : undefined;
  } catch {
    return undefined;
  }
}
