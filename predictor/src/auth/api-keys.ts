import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Principal } from './principal.js';

/**
 * API keys, the second way in (`X-API-Key`). A key reads `m2mk_<id>_<secret>`: the id
 * finds the record, the secret is stored only as its SHA-256 and compared in constant
 * time. A 256-bit random secret needs no slow password hash: it cannot be guessed.
 */
export const API_KEY_PREFIX = 'm2mk_';
const API_KEY_FORMAT = /^m2mk_([A-Za-z0-9-]{16})_([A-Za-z0-9_-]{43})$/;

export interface ApiKeyRecord {
  id: string;
  clientId: string;
  secretSha256: Buffer;
  scopes: string[];
  plan: string;
  createdAt: string;
  revokedAt: string | undefined;
}

export interface ApiKeyStore {
  find(id: string): Promise<ApiKeyRecord | undefined>;
  insert(record: ApiKeyRecord): Promise<void>;
  /** Returns false when no such key exists. */
  revoke(id: string, at: string): Promise<boolean>;
  list(): Promise<ApiKeyRecord[]>;
  close(): Promise<void>;
}

export class InvalidApiKey extends Error {
  override name = 'InvalidApiKey';
}

const sha256 = (value: string) => createHash('sha256').update(value).digest();

/** Creates a key; the returned `apiKey` is shown once and never stored. */
export function newApiKey(input: { clientId: string; scopes: string[]; plan: string; now: Date }): { apiKey: string; record: ApiKeyRecord } {
  const id = newKeyId();
  const secret = randomBytes(32).toString('base64url');
  return {
    apiKey: `${API_KEY_PREFIX}${id}_${secret}`,
    record: { id, clientId: input.clientId, secretSha256: sha256(secret), scopes: input.scopes, plan: input.plan, createdAt: input.now.toISOString(), revokedAt: undefined },
  };
}

/**
 * 16 characters of base64url ('_' read as '-', the separator), never starting with '-': one id
 * in 32 did, and `npm run apikey -- revoke <id>` then read it as an option.
 */
function newKeyId(): string {
  for (;;) {
    const id = randomBytes(12).toString('base64url').replace(/_/g, '-');
    if (!id.startsWith('-')) return id;
  }
}

/** Resolves an X-API-Key header into a principal, or throws InvalidApiKey. */
export function createApiKeyVerifier(store: ApiKeyStore) {
  return async function verifyApiKey(presented: string): Promise<Principal> {
    const match = API_KEY_FORMAT.exec(presented);
    if (!match) throw new InvalidApiKey('The API key is malformed.');
    const [, id, secret] = match as unknown as [string, string, string];
    const record = await store.find(id);
    // Compare even when the id is unknown, so timing does not tell valid ids apart.
    const expected = record?.secretSha256 ?? sha256('');
    const matches = timingSafeEqual(sha256(secret), expected);
    if (!record || !matches) throw new InvalidApiKey('The API key is not valid.');
    if (record.revokedAt) throw new InvalidApiKey('The API key has been revoked.');
    return { clientId: record.clientId, scopes: new Set(record.scopes), plan: record.plan, authMethod: 'api-key', tokenId: record.id, expiresAt: undefined };
  };
}

export type ApiKeyVerifier = ReturnType<typeof createApiKeyVerifier>;
