import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type Provider from 'oidc-provider';
import type { Logger } from '@m2m/common';
import type { ClientAuthThrottle } from './client-auth/failure-throttle.js';
import type { AuthMetrics } from './metrics.js';
import { parseTokenForm, presentsNoClient, repeatedQueryParameter, single, type TokenForm } from './token-request.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export interface AuthHttpServerOptions {
  /** Brute-force protection of the token endpoint; undefined: none. */
  throttle?: ClientAuthThrottle | undefined;
  /** Counts failed client authentications and throttled requests (served by the admin listener). */
  metrics?: AuthMetrics | undefined;
}

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
  /** The issuer of the provider in use: the realm of this server's own 401 answers. */
  #realm = '';

  /**
   * @param defaultScope the scope to grant a client whose token request names none
   *   (RFC 6749 section 3.3 lets the server pick a default: here, the registered scopes).
   */
  constructor(
    private readonly logger: Logger,
    private readonly defaultScope: (clientId: string) => string | undefined = () => undefined,
    private readonly options: AuthHttpServerOptions = {},
  ) {
    this.server = createServer((req, res) => this.#dispatch(req, res));
    // Machine clients keep connections alive; stuck ones must not hold sockets forever.
    this.server.requestTimeout = 30_000;
    this.server.headersTimeout = 10_000;
    this.server.keepAliveTimeout = 5_000;
  }

  use(provider: Provider): void {
    this.#handler = provider.callback() as Handler;
    this.#realm = provider.issuer;
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
    if (path === '/token' && req.method === 'POST') {
      const isForm = /^application\/x-www-form-urlencoded/i.test(req.headers['content-type'] ?? '');
      const form = isForm ? this.#withDefaultScope(req) : Promise.resolve({});
      form.then(
        (fields) => {
          if (isForm && this.#refusedBeforeProvider(req, res, fields)) return;
          this.#authenticateThrottled(req, res, handler, clientIdOf(req.headers.authorization, fields));
        },
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
   * Returns the form as the client sent it (without the default scope).
   */
  async #withDefaultScope(req: IncomingMessage): Promise<TokenForm> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > 56 * 1024) throw new Error('token request body too large');
      chunks.push(chunk as Buffer);
    }
    // Repeated parameters stay arrays: oidc-provider refuses them (RFC 6749 section 3.2).
    const sent = parseTokenForm(Buffer.concat(chunks).toString('utf8'));
    const form = { ...sent };
    // Empty is absent, as oidc-provider reads every parameter.
    if (!form['scope'] && single(form, 'grant_type') === 'client_credentials') {
      const clientId = clientIdOf(req.headers.authorization, form);
      const scope = clientId === undefined ? undefined : this.defaultScope(clientId);
      if (scope) form['scope'] = scope;
    }
    (req as IncomingMessage & { body?: unknown }).body = form;
    return sent;
  }

  /**
   * Answers the token requests oidc-provider would get wrong (token-request.ts): a
   * parameter repeated in the query string, or in both query and body (400
   * `invalid_request`), and a request without any client authentication (401
   * `invalid_client`, where oidc-provider says 400 `invalid_request`). Returns whether it answered.
   */
  #refusedBeforeProvider(req: IncomingMessage, res: ServerResponse, form: TokenForm): boolean {
    const url = req.url ?? '';
    const query = url.includes('?') ? url.slice(url.indexOf('?') + 1) : '';
    const repeated = repeatedQueryParameter(query, form);
    if (repeated !== undefined) {
      writeOAuthError(res, 400, { error: 'invalid_request', error_description: `'${repeated}' parameter must not be provided twice` });
      return true;
    }
    if (presentsNoClient(req.headers.authorization, form)) {
      writeOAuthError(res, 401, { error: 'invalid_client', error_description: 'no client authentication included' }, { 'www-authenticate': `Basic realm="${this.#realm}"` });
      return true;
    }
    return false;
  }

  /**
   * Hands a token request to oidc-provider unless its source address or the client it
   * names has failed to authenticate too often (client-auth/failure-throttle.ts); then
   * answers 429 with Retry-After and an OAuth error body. The outcome (401 is
   * `invalid_client`, the only 401 of the token endpoint) feeds the throttle afterwards.
   */
  #authenticateThrottled(req: IncomingMessage, res: ServerResponse, handler: Handler, clientId: string | undefined): void {
    const { throttle, metrics } = this.options;
    if (metrics) res.once('finish', () => res.statusCode === 401 && metrics.clientAuthFailures.inc());
    if (!throttle) {
      handler(req, res);
      return;
    }
    // The peer of the TCP connection: X-Forwarded-For is not trusted (there is no trusted-proxy setting).
    const address = (req.socket.remoteAddress ?? 'unknown').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
    const admission = throttle.admit(clientId, address);
    if (!admission.admitted) {
      const retryAfter = Math.max(1, Math.ceil(admission.retryAfterMs / 1000));
      metrics?.clientAuthThrottled.inc({ limit: admission.limit });
      this.logger.warn({ event: 'token.throttled', limit: admission.limit, clientId: clientId?.slice(0, 64), address, retryAfter }, 'token request refused after failed client authentications');
      const reason = admission.limit === 'client' ? 'for this client' : 'from this address';
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': String(retryAfter), 'cache-control': 'no-store' });
      res.end(JSON.stringify({ error: 'slow_down', error_description: `too many failed client authentications ${reason}; retry after ${retryAfter} s` }));
      return;
    }
    res.once('finish', () => admission.settle(res.statusCode === 401 ? 'failure' : res.statusCode === 200 ? 'success' : 'other'));
    handler(req, res);
  }
}

/** The client a token request claims to be (authentication itself is oidc-provider's job). */
function clientIdOf(authorization: string | undefined, form: TokenForm): string | undefined {
  const basic = authorization?.match(/^Basic\s+(\S+)$/i)?.[1];
  if (basic) {
    const decoded = Buffer.from(basic, 'base64').toString('utf8');
    const separator = decoded.indexOf(':');
    return separator > 0 ? decodeURIComponent(decoded.slice(0, separator).replace(/\+/g, ' ')) : undefined;
  }
  const clientId = single(form, 'client_id');
  if (clientId) return clientId;
  const assertion = single(form, 'client_assertion')?.split('.')[1];
  if (!assertion) return undefined;
  try {
    const payload = JSON.parse(Buffer.from(assertion, 'base64url').toString('utf8')) as { sub?: unknown };
    return typeof payload.sub === 'string' ? payload.sub : undefined;
  } catch {
    return undefined;
  }
}

/** An OAuth error (RFC 6749 section 5.2) as oidc-provider renders its own: JSON, never cached. */
function writeOAuthError(res: ServerResponse, status: number, body: { error: string; error_description: string }, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}
