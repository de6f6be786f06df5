import type { ClientView, KeyView } from '../operations.js';
import type { AdminStats } from './admin-app.js';

export class AdminRequestError extends Error {
  override name = 'AdminRequestError';

  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** A typed client of the admin API, for the admin CLI, the demo and the scenarios. */
export class AdminClient {
  constructor(
    private readonly baseUrl: string,
    private readonly adminToken: string,
  ) {}

  listKeys = () => this.#call<{ keys: KeyView[] }>('GET', '/keys').then((body) => body.keys);
  rotateKeys = (options: { force?: boolean } = {}) => this.#call<{ keys: KeyView[] }>('POST', '/keys/rotate', options).then((body) => body.keys);
  revokeKey = (kid: string) => this.#call<{ keys: KeyView[] }>('POST', `/keys/${encodeURIComponent(kid)}/revoke`).then((body) => body.keys);
  listClients = () => this.#call<{ clients: ClientView[] }>('GET', '/clients').then((body) => body.clients);
  registerClient = (input: { client_id: string; scopes: string[]; plan: string; auth_method?: string; jwks?: unknown }) =>
    this.#call<{ client: ClientView; client_secret?: string }>('POST', '/clients', input);
  rotateClientSecret = (clientId: string, overlapSeconds: number) =>
    this.#call<{ client_secret: string; previous_valid_until: string }>('POST', `/clients/${encodeURIComponent(clientId)}/secret/rotate`, { overlap_seconds: overlapSeconds });
  retirePreviousSecret = (clientId: string) => this.#call<ClientView>('POST', `/clients/${encodeURIComponent(clientId)}/secret/retire-previous`);
  updateClient = (clientId: string, change: { scopes?: string[]; plan?: string; disabled?: boolean; jwks?: unknown }) =>
    this.#call<ClientView>('PATCH', `/clients/${encodeURIComponent(clientId)}`, change);
  stats = () => this.#call<AdminStats>('GET', '/stats');

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl.replace(/\/+$/, '')}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? null : JSON.stringify(body),
      });
    } catch (error) {
      throw new AdminRequestError(`admin API unreachable at ${this.baseUrl}: ${(error as Error & { cause?: Error }).cause?.message ?? (error as Error).message}`, 0);
    }
    const payload = (await response.json().catch(() => ({}))) as { error?: string };
    if (!response.ok) throw new AdminRequestError(`admin API answered ${response.status}: ${payload.error ?? 'no details'}`, response.status);
    return payload as T;
  }
}
