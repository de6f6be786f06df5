import type { ClientView, KeyView } from '../operations.js';
import type { AdminStats } from './admin-app.js';

/** Why an admin request failed, from its HTTP status (0: no answer at all). */
export type AdminFailure = 'unreachable' | 'unauthorized' | 'not_found' | 'conflict' | 'rejected' | 'failed';

export class AdminRequestError extends Error {
  override name = 'AdminRequestError';

  constructor(
    message: string,
    /** The admin API's HTTP status; 0 when it could not be reached. */
    readonly status: number,
  ) {
    super(message);
  }

  /** 401/403: a missing or wrong ADMIN_TOKEN; 404: no such client or key; 409: a conflict (exists, too early, a race); 400: invalid input. */
  get failure(): AdminFailure {
    if (this.status === 0) return 'unreachable';
    if (this.status === 401 || this.status === 403) return 'unauthorized';
    if (this.status === 404) return 'not_found';
    if (this.status === 409) return 'conflict';
    if (this.status === 400) return 'rejected';
    return 'failed';
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
  registerClient = (input: { client_id: string; scopes: string[]; plan: string; auth_method?: string; jwks?: unknown; dpop_bound_access_tokens?: boolean }) =>
    this.#call<{ client: ClientView; client_secret?: string }>('POST', '/clients', input);
  rotateClientSecret = (clientId: string, overlapSeconds: number) =>
    this.#call<{ client_secret: string; previous_valid_until: string }>('POST', `/clients/${encodeURIComponent(clientId)}/secret/rotate`, { overlap_seconds: overlapSeconds });
  retirePreviousSecret = (clientId: string) => this.#call<ClientView>('POST', `/clients/${encodeURIComponent(clientId)}/secret/retire-previous`);
  updateClient = (clientId: string, change: { scopes?: string[]; plan?: string; disabled?: boolean; jwks?: unknown; dpop_bound_access_tokens?: boolean }) =>
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
