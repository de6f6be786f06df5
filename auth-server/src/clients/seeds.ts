import { readFileSync } from 'node:fs';
import { sha256Hex, type StoredClient } from './registry.js';

/** A machine client allowed to use the client-credentials grant. */
export interface ClientRegistration {
  clientId: string;
  /** Shared secret for client_secret_basic / client_secret_post. */
  clientSecret: string;
  /** Scopes the client may ask for; asking for another is `invalid_scope`. */
  scopes: string[];
  /** Rate-limit plan name, carried into every access token as the `plan` claim. */
  plan: string;
}

/** Dev-mode demo clients, their secrets from dev.env (contract, section 2). */
export const DEMO_CLIENTS = [
  { clientId: 'demo-caller', secretVariable: 'DEMO_CALLER_SECRET', scopes: ['predict', 'models:read'], plan: 'standard' },
  { clientId: 'demo-readonly', secretVariable: 'DEMO_READONLY_SECRET', scopes: ['models:read'], plan: 'standard' },
  { clientId: 'demo-free', secretVariable: 'DEMO_FREE_SECRET', scopes: ['predict', 'models:read'], plan: 'free' },
] as const;

export class ClientsFileError extends Error {
  override name = 'ClientsFileError';
}

/**
 * Reads registrations from a JSON file `{ "clients": [{ "client_id", "client_secret",
 * "scope": "predict models:read", "plan" }] }` (the production source of clients).
 */
export function readClientsFile(path: string): ClientRegistration[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new ClientsFileError(`cannot read ${path}: ${(error as Error).message}`);
  }
  const list = (parsed as { clients?: unknown }).clients;
  if (!Array.isArray(list)) throw new ClientsFileError(`${path} has no "clients" array`);
  return list.map((entry: Record<string, unknown>, index) => {
    const { client_id, client_secret, scope, plan } = entry;
    if (typeof client_id !== 'string' || client_id === '') throw new ClientsFileError(`clients[${index}].client_id must be a non-empty string`);
    if (typeof client_secret !== 'string' || client_secret === '') throw new ClientsFileError(`client ${client_id}: client_secret must be a non-empty string`);
    if (typeof scope !== 'string') throw new ClientsFileError(`client ${client_id}: scope must be a space-separated string`);
    if (typeof plan !== 'string' || plan === '') throw new ClientsFileError(`client ${client_id}: plan must be a non-empty string`);
    return { clientId: client_id, clientSecret: client_secret, scopes: scope.split(' ').filter(Boolean), plan };
  });
}

/** The persisted form of a seed registration: the secret only as its hash. */
export function toStoredClient(registration: ClientRegistration, now: Date): StoredClient {
  return {
    clientId: registration.clientId,
    authMethod: 'client_secret_basic',
    secretSha256: sha256Hex(registration.clientSecret),
    scopes: registration.scopes,
    plan: registration.plan,
    disabled: false,
    updatedAt: now.toISOString(),
  };
}
