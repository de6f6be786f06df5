import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import type { Adapter } from 'oidc-provider';
import type { StoredClient } from '../clients/registry.js';
import { KeyRing } from '../keys/key-ring.js';
import { newSigningKeyFile } from '../keys/signing-key-file.js';
import { createProvider } from '../provider.js';

/** Test support: private_key_jwt clients, their assertions, and real providers serving them. */

export const TEST_ISSUER = 'http://auth.replay.test';
export const TEST_AUDIENCE = 'http://predictor.replay.test';

export interface AssertionClient {
  stored: StoredClient;
  /** A signed client assertion; `lifetimeSeconds` from `iat` (now unless given), a fresh jti unless given. */
  assertion(options?: { jti?: string; lifetimeSeconds?: number; iat?: number | null; audience?: string }): Promise<string>;
}

export async function assertionClient(clientId: string, now = () => Math.floor(Date.now() / 1000)): Promise<AssertionClient> {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  const kid = `${clientId}-key`;
  const stored: StoredClient = {
    clientId,
    authMethod: 'private_key_jwt',
    jwks: { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }] },
    scopes: ['predict'],
    plan: 'standard',
    disabled: false,
    updatedAt: new Date().toISOString(),
  };
  return {
    stored,
    assertion: (options = {}) => sign(privateKey as CryptoKey, kid, clientId, now(), options),
  };
}

function sign(key: CryptoKey, kid: string, clientId: string, now: number, options: { jti?: string; lifetimeSeconds?: number; iat?: number | null; audience?: string }): Promise<string> {
  const iat = options.iat === undefined ? now : options.iat;
  const jwt = new SignJWT({})
    .setProtectedHeader({ alg: 'ES256', kid })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(options.audience ?? TEST_ISSUER)
    .setJti(options.jti ?? randomUUID())
    .setExpirationTime((iat ?? now) + (options.lifetimeSeconds ?? 60));
  if (iat !== null) jwt.setIssuedAt(iat);
  return jwt.sign(key);
}

/** A token request authenticated by `assertion`, as a client sends it. */
export async function postAssertion(tokenEndpoint: string, assertion: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(tokenEndpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'client_credentials',
      scope: 'predict',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** One oidc-provider as createProvider builds it, served on an ephemeral port: a replica. */
export async function serveProvider(options: { clients: StoredClient[]; adapter: new (model: string) => Adapter; keys?: KeyRing }): Promise<{ tokenEndpoint: string; close: () => Promise<void> }> {
  const ring = options.keys ?? (await testKeyRing());
  const provider = await createProvider({
    issuer: TEST_ISSUER,
    audience: TEST_AUDIENCE,
    accessTokenTtlSeconds: 300,
    clients: options.clients,
    publishedKeys: ring.published(),
    signingKid: ring.current.kid,
    verifySecret: () => false,
    adapter: options.adapter,
    clientAssertionMaxLifetimeSeconds: 300,
  });
  const server: Server = createServer(provider.callback());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    tokenEndpoint: `http://127.0.0.1:${port}/token`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export async function testKeyRing(): Promise<KeyRing> {
  return new KeyRing(await newSigningKeyFile('keys-generate', new Date()), { propagationMs: 0, tokenLifetimeMs: 60_000 });
}
