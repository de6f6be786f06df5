import type { Logger } from '@m2m/common';
import type { JWK } from 'jose';
import { ClientRegistryError, type ClientAuthMethod, type ClientRegistry, type StoredClient } from './clients/registry.js';
import { KeyRing, RotationTooEarly, UnknownKey } from './keys/key-ring.js';
import type { KeyState } from './keys/signing-key-file.js';
import { PREDICTOR_SCOPES } from './provider.js';
import { StateConflict, type AuthStateStorage } from './state/storage.js';

export interface KeyView {
  kid: string;
  state: KeyState;
  publishedAt: string;
  activatedAt?: string | undefined;
  removeAfter?: string | undefined;
}

export interface ClientView {
  client_id: string;
  auth_method: ClientAuthMethod;
  scopes: string[];
  plan: string;
  /** Token requests must carry a DPoP proof (RFC 9449 section 5.2): its tokens are all key-bound. */
  dpop_bound_access_tokens: boolean;
  disabled: boolean;
  previous_secret_valid_until?: string | undefined;
  kids?: (string | undefined)[] | undefined;
  updated_at: string;
}

/** An admin request that cannot be done as asked; `status` is the HTTP answer. */
export class OperationError extends Error {
  override name = 'OperationError';

  constructor(
    message: string,
    readonly status: 400 | 404 | 409,
  ) {
    super(message);
  }
}

const KNOWN_SCOPES = new Set<string>(PREDICTOR_SCOPES);

/**
 * Everything an operator can change at run time: signing keys and clients. Changes
 * run one at a time, are persisted before they take effect, rebuild the provider
 * (swapped in without a failed request) and are logged without secrets. Replicas
 * sharing the state adopt each other's changes through `pullChanges`.
 */
export class AuthOperations {
  #ring: KeyRing;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(
    ring: KeyRing,
    private readonly deps: { registry: ClientRegistry; storage: AuthStateStorage; rebuild: () => Promise<void>; logger: Logger },
  ) {
    this.#ring = ring;
  }

  get ring(): KeyRing {
    return this.#ring;
  }

  listKeys(): KeyView[] {
    return this.#ring.file.keys.map(({ kid, state, publishedAt, activatedAt, removeAfter }) => ({ kid, state, publishedAt, activatedAt, removeAfter }));
  }

  rotateKeys(options: { force?: boolean }): Promise<KeyView[]> {
    return this.#serially(async () => {
      const before = this.#ring.current.kid;
      await this.#setRing(await this.#keyOperation(() => this.#ring.rotate(options)));
      this.deps.logger.info({ event: 'admin.keys.rotated', previous: before, current: this.#ring.current.kid, next: this.#ring.next?.kid, forced: Boolean(options.force) }, 'signing key rotated');
      return this.listKeys();
    });
  }

  revokeKey(kid: string): Promise<KeyView[]> {
    return this.#serially(async () => {
      await this.#setRing(await this.#keyOperation(() => this.#ring.revoke(kid)));
      this.deps.logger.warn({ event: 'admin.keys.revoked', kid, current: this.#ring.current.kid }, 'signing key revoked');
      return this.listKeys();
    });
  }

  /** Drops previous keys whose tokens have all expired; run periodically. */
  pruneKeys(): Promise<void> {
    return this.#serially(async () => {
      const pruned = this.#ring.prune();
      if (!pruned) return;
      const removed = this.#ring.file.keys.filter((key) => !pruned.file.keys.some((kept) => kept.kid === key.kid)).map((key) => key.kid);
      await this.#setRing(pruned);
      this.deps.logger.info({ event: 'keys.pruned', removed }, 'expired previous signing keys removed');
    });
  }

  /** Adopts what another replica changed (keys, clients) and rebuilds the provider if anything did. */
  pullChanges(): Promise<void> {
    return this.#serially(() => this.#pull());
  }

  listClients(): ClientView[] {
    return this.deps.registry.list().map(clientView);
  }

  registerClient(input: { client_id?: unknown; auth_method?: unknown; scopes?: unknown; plan?: unknown; jwks?: unknown; dpop_bound_access_tokens?: unknown }): Promise<{ client: ClientView; client_secret?: string }> {
    return this.#serially(async () => {
      if (typeof input.client_id !== 'string' || !/^[\w.-]{1,64}$/.test(input.client_id)) throw new OperationError('client_id must be 1-64 letters, digits, "_", "." or "-"', 400);
      const authMethod = (input.auth_method ?? 'client_secret_basic') as ClientAuthMethod;
      if (!['client_secret_basic', 'client_secret_post', 'private_key_jwt'].includes(authMethod)) throw new OperationError('auth_method must be client_secret_basic, client_secret_post or private_key_jwt', 400);
      const dpopBoundAccessTokens = input.dpop_bound_access_tokens === undefined ? false : checkDpopBound(input.dpop_bound_access_tokens);
      const { client, secret } = await this.#clientOperation(() =>
        this.deps.registry.register({
          clientId: input.client_id as string,
          authMethod,
          scopes: checkScopes(input.scopes),
          plan: checkPlan(input.plan),
          ...(input.jwks ? { jwks: checkJwks(input.jwks) } : {}),
          dpopBoundAccessTokens,
        }),
      );
      await this.deps.rebuild();
      this.deps.logger.info({ event: 'admin.clients.registered', clientId: client.clientId, authMethod, scopes: client.scopes, plan: client.plan, dpopBoundAccessTokens }, 'client registered');
      return secret === undefined ? { client: clientView(client) } : { client: clientView(client), client_secret: secret };
    });
  }

  rotateClientSecret(clientId: string, overlapSeconds: number): Promise<{ client_secret: string; previous_valid_until: string }> {
    return this.#serially(async () => {
      if (!Number.isInteger(overlapSeconds) || overlapSeconds < 0 || overlapSeconds > 30 * 86_400) throw new OperationError('overlap_seconds must be an integer from 0 to 2592000', 400);
      const { secret, previousValidUntil } = await this.#clientOperation(() => this.deps.registry.rotateSecret(clientId, overlapSeconds));
      this.deps.logger.info({ event: 'admin.clients.secret_rotated', clientId, previousValidUntil }, 'client secret rotated');
      return { client_secret: secret, previous_valid_until: previousValidUntil };
    });
  }

  retirePreviousSecret(clientId: string): Promise<ClientView> {
    return this.#serially(async () => {
      await this.#clientOperation(() => this.deps.registry.retirePreviousSecret(clientId));
      this.deps.logger.info({ event: 'admin.clients.previous_secret_retired', clientId }, 'previous client secret retired');
      return clientView(this.deps.registry.get(clientId));
    });
  }

  updateClient(clientId: string, change: { scopes?: unknown; plan?: unknown; disabled?: unknown; jwks?: unknown; dpop_bound_access_tokens?: unknown }): Promise<ClientView> {
    return this.#serially(async () => {
      const update: Parameters<ClientRegistry['update']>[1] = {};
      if (change.scopes !== undefined) update.scopes = checkScopes(change.scopes);
      if (change.plan !== undefined) update.plan = checkPlan(change.plan);
      if (change.disabled !== undefined) {
        if (typeof change.disabled !== 'boolean') throw new OperationError('disabled must be true or false', 400);
        update.disabled = change.disabled;
      }
      if (change.jwks !== undefined) update.jwks = checkJwks(change.jwks);
      if (change.dpop_bound_access_tokens !== undefined) update.dpopBoundAccessTokens = checkDpopBound(change.dpop_bound_access_tokens);
      const client = await this.#clientOperation(() => this.deps.registry.update(clientId, update));
      await this.deps.rebuild();
      this.deps.logger.info({ event: 'admin.clients.updated', clientId, scopes: update.scopes, plan: update.plan, disabled: update.disabled, dpopBoundAccessTokens: update.dpopBoundAccessTokens, kids: update.jwks?.keys.map((key) => key.kid) }, 'client updated');
      return clientView(client);
    });
  }

  /**
   * One change at a time: each reads the state the previous one left. A change that
   * lost a race with another replica is retried once on the state that replica wrote.
   */
  #serially<T>(operation: () => Promise<T>): Promise<T> {
    const withRetry = async () => {
      try {
        return await operation();
      } catch (error) {
        if (!(error instanceof StateConflict)) throw error;
        await this.#pull();
        try {
          return await operation();
        } catch (again) {
          if (again instanceof StateConflict) throw new OperationError('the state is being changed by another replica; retry', 409);
          throw again;
        }
      }
    };
    const run = this.#queue.then(withRetry, withRetry);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #pull(): Promise<void> {
    const { keys, clients } = await this.deps.storage.pullChanges();
    if (!keys && !clients) return;
    if (keys) this.#ring = this.#ring.adopt(keys);
    if (clients) this.deps.registry.replace(clients);
    await this.deps.rebuild();
    this.deps.logger.info({ event: 'state.pulled', keys: keys ? this.listKeys().map((key) => `${key.kid} (${key.state})`) : undefined, clients: clients?.length }, 'adopted a change made by another replica');
  }

  async #setRing(ring: KeyRing): Promise<void> {
    await this.deps.storage.saveKeys(ring.file);
    this.#ring = ring;
    await this.deps.rebuild();
  }

  async #keyOperation(operation: () => Promise<KeyRing>): Promise<KeyRing> {
    try {
      return await operation();
    } catch (error) {
      if (error instanceof RotationTooEarly) throw new OperationError(error.message, 409);
      if (error instanceof UnknownKey) throw new OperationError(error.message, 404);
      throw error;
    }
  }

  async #clientOperation<T>(operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      if (error instanceof ClientRegistryError) throw new OperationError(error.message, error.status);
      throw error;
    }
  }
}

function clientView(client: StoredClient): ClientView {
  return {
    client_id: client.clientId,
    auth_method: client.authMethod,
    scopes: client.scopes,
    plan: client.plan,
    dpop_bound_access_tokens: client.dpopBoundAccessTokens === true,
    disabled: client.disabled,
    previous_secret_valid_until: client.previousSecret?.expiresAt,
    kids: client.jwks?.keys.map((key) => key.kid),
    updated_at: client.updatedAt,
  };
}

function checkScopes(value: unknown): string[] {
  const scopes = typeof value === 'string' ? value.split(/[\s,]+/).filter(Boolean) : value;
  if (!Array.isArray(scopes) || !scopes.every((scope) => typeof scope === 'string' && KNOWN_SCOPES.has(scope))) {
    throw new OperationError(`scopes must be a list of known scopes (${[...KNOWN_SCOPES].join(', ')})`, 400);
  }
  return scopes as string[];
}

function checkPlan(value: unknown): string {
  if (typeof value !== 'string' || !/^[\w-]{1,32}$/.test(value)) throw new OperationError('plan must be a plan name', 400);
  return value;
}

function checkDpopBound(value: unknown): boolean {
  if (typeof value !== 'boolean') throw new OperationError('dpop_bound_access_tokens must be true or false', 400);
  return value;
}

function checkJwks(value: unknown): { keys: JWK[] } {
  const keys = (value as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || keys.length === 0 || keys.some((key: JWK) => typeof key?.kty !== 'string' || 'd' in key)) {
    throw new OperationError('jwks must be {"keys": [public JWKs]} (no private parts)', 400);
  }
  return { keys: keys as JWK[] };
}
