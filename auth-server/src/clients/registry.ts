import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { JWK } from 'jose';
import { readClientsFile, writeClientsFile } from '../state/storage.js';

export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt';

/** A client as persisted: secrets only as SHA-256 hashes. */
export interface StoredClient {
  clientId: string;
  authMethod: ClientAuthMethod;
  /** Hex SHA-256 of the current secret (secret-based methods). */
  secretSha256?: string | undefined;
  /** The secret before the last rotation, accepted until `expiresAt` (the overlap window). */
  previousSecret?: { sha256: string; expiresAt: string } | undefined;
  /** Public keys for private_key_jwt. */
  jwks?: { keys: JWK[] } | undefined;
  scopes: string[];
  plan: string;
  /**
   * RFC 9449 section 5.2 `dpop_bound_access_tokens`: every token request must carry a DPoP
   * proof, so every token it gets is bound to a key (`cnf.jkt`). Absent: false.
   */
  dpopBoundAccessTokens?: boolean | undefined;
  disabled: boolean;
  updatedAt: string;
}

export class ClientRegistryError extends Error {
  override name = 'ClientRegistryError';

  constructor(
    message: string,
    readonly status: 400 | 404 | 409,
  ) {
    super(message);
  }
}

export const sha256Hex = (value: string) => createHash('sha256').update(value).digest('hex');

/** A random 256-bit client secret. */
export const newClientSecret = () => randomBytes(32).toString('base64url');

/**
 * Client registrations. Every change is persisted (a file, or PostgreSQL shared by
 * replicas) before it is visible. Secrets are kept as hashes: oidc-provider's secret
 * comparison is replaced (see provider.ts) by `verifySecret`, which also honours the
 * overlap window of a rotated secret.
 */
export class ClientRegistry {
  #clients: Map<string, StoredClient>;

  constructor(
    clients: StoredClient[],
    private readonly persist: (clients: StoredClient[]) => Promise<void>,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.#clients = new Map(clients.map((client) => [client.clientId, client]));
  }

  /** A registry in a file of its own, seeded on first start. */
  static async open(path: string, seed: () => StoredClient[], now: () => Date = () => new Date()): Promise<{ registry: ClientRegistry; seeded: boolean }> {
    const persist = (clients: StoredClient[]) => writeClientsFile(path, clients);
    const stored = await readClientsFile(path);
    if (stored) return { registry: new ClientRegistry(stored, persist, now), seeded: false };
    const seeded = seed();
    await persist(seeded);
    return { registry: new ClientRegistry(seeded, persist, now), seeded: true };
  }

  /** Adopts registrations another replica wrote. */
  replace(clients: StoredClient[]): void {
    this.#clients = new Map(clients.map((client) => [client.clientId, client]));
  }

  list(): StoredClient[] {
    return [...this.#clients.values()];
  }

  /** Enabled clients, for the provider. */
  active(): StoredClient[] {
    return this.list().filter((client) => !client.disabled);
  }

  get(clientId: string): StoredClient {
    const client = this.#clients.get(clientId);
    if (!client) throw new ClientRegistryError(`no client ${clientId}`, 404);
    return client;
  }

  /** Constant-time check of a presented secret against the current and, inside its window, the previous one. */
  verifySecret(clientId: string, presented: string): boolean {
    const client = this.#clients.get(clientId);
    if (!client?.secretSha256) return false;
    const actual = Buffer.from(sha256Hex(presented), 'hex');
    const matches = (hex: string) => timingSafeEqual(actual, Buffer.from(hex, 'hex'));
    const current = matches(client.secretSha256);
    const previous = client.previousSecret && Date.parse(client.previousSecret.expiresAt) > this.now().getTime() && matches(client.previousSecret.sha256);
    return current || Boolean(previous);
  }

  /** Registers a client; returns the secret (shown once) for secret-based methods. */
  async register(input: { clientId: string; authMethod: ClientAuthMethod; scopes: string[]; plan: string; jwks?: { keys: JWK[] }; secret?: string; dpopBoundAccessTokens?: boolean }): Promise<{ client: StoredClient; secret?: string }> {
    if (this.#clients.has(input.clientId)) throw new ClientRegistryError(`client ${input.clientId} exists`, 409);
    if (input.authMethod === 'private_key_jwt' && !input.jwks?.keys.length) throw new ClientRegistryError('private_key_jwt needs a jwks with at least one public key', 400);
    const secret = input.authMethod === 'private_key_jwt' ? undefined : (input.secret ?? newClientSecret());
    const client: StoredClient = {
      clientId: input.clientId,
      authMethod: input.authMethod,
      secretSha256: secret === undefined ? undefined : sha256Hex(secret),
      jwks: input.jwks,
      scopes: input.scopes,
      plan: input.plan,
      ...(input.dpopBoundAccessTokens ? { dpopBoundAccessTokens: true } : {}),
      disabled: false,
      updatedAt: this.now().toISOString(),
    };
    await this.#save(new Map(this.#clients).set(client.clientId, client));
    return secret === undefined ? { client } : { client, secret };
  }

  /** New secret; the old one stays valid for `overlapSeconds` (0: at once invalid). */
  async rotateSecret(clientId: string, overlapSeconds: number): Promise<{ secret: string; previousValidUntil: string }> {
    const client = this.get(clientId);
    if (!client.secretSha256) throw new ClientRegistryError(`client ${clientId} authenticates with private_key_jwt: rotate its keys instead`, 400);
    const secret = newClientSecret();
    const previousValidUntil = new Date(this.now().getTime() + overlapSeconds * 1000).toISOString();
    await this.#update(clientId, { secretSha256: sha256Hex(secret), previousSecret: { sha256: client.secretSha256, expiresAt: previousValidUntil } });
    return { secret, previousValidUntil };
  }

  /** Ends the overlap window now: only the newest secret works. */
  async retirePreviousSecret(clientId: string): Promise<void> {
    await this.#update(clientId, { previousSecret: undefined });
  }

  async update(clientId: string, change: { scopes?: string[]; plan?: string; disabled?: boolean; jwks?: { keys: JWK[] }; dpopBoundAccessTokens?: boolean }): Promise<StoredClient> {
    const client = this.get(clientId);
    if (change.jwks && client.authMethod !== 'private_key_jwt') throw new ClientRegistryError(`client ${clientId} does not use private_key_jwt`, 400);
    return this.#update(clientId, change);
  }

  async #update(clientId: string, change: Partial<StoredClient>): Promise<StoredClient> {
    const updated = { ...this.get(clientId), ...change, updatedAt: this.now().toISOString() };
    await this.#save(new Map(this.#clients).set(clientId, updated));
    return updated;
  }

  /** Persists first, so a failed or conflicting write changes nothing here. */
  async #save(clients: Map<string, StoredClient>): Promise<void> {
    await this.persist([...clients.values()]);
    this.#clients = clients;
  }
}
