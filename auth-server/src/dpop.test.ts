import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { createLogger } from '@m2m/common';
import { startAuthServer, type RunningAuthServer } from './app.js';
import { loadAuthServerConfig } from './config.js';
import { openAuthState } from './state/open.js';

const SECRET = 'dev-demo-caller-secret-for-dpop-test-000001';
const AUDIENCE = 'https://predictor.dpop.test';

interface ProofKey {
  privateKey: CryptoKey;
  jwk: JWK;
  thumbprint: string;
}

async function proofKey(): Promise<ProofKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwk = await exportJWK(publicKey);
  return { privateKey, jwk, thumbprint: await calculateJwkThumbprint(jwk) };
}

/** A DPoP proof (RFC 9449 section 4.2) for the token endpoint. */
function proof(key: ProofKey, htu: string, claims: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT({ htm: 'POST', htu, jti: randomUUID(), iat: Math.floor(Date.now() / 1000), ...claims })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk })
    .sign(key.privateKey);
}

async function startServer(dir: string, env: Record<string, string> = {}): Promise<RunningAuthServer> {
  const config = loadAuthServerConfig({
    AUTH_PORT: '0',
    AUTH_HOST: '127.0.0.1',
    DATA_DIR: dir,
    PREDICTOR_AUDIENCE: AUDIENCE,
    DEMO_CALLER_SECRET: SECRET,
    ADMIN_TOKEN: 'dpop-test-admin-token-00000000000000000',
    ADMIN_PORT: '0',
    ...env,
  });
  return startAuthServer({ config, state: await openAuthState(config), logger: createLogger('auth-server', 'silent') });
}

async function stopServer(server: RunningAuthServer): Promise<void> {
  await Promise.all(Object.values(server.listeners).map((listener) => new Promise<void>((resolve) => listener.close(() => resolve()))));
  await server.closeState();
}

function tokenRequest(server: RunningAuthServer, clientId: string, secret: string, dpop?: string) {
  return fetch(`http://127.0.0.1:${server.port}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
      ...(dpop ? { dpop } : {}),
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'predict' }),
  });
}

describe('DPoP at the token endpoint (RFC 9449 section 5)', () => {
  let dir: string;
  let server: RunningAuthServer;
  let tokenUrl: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'auth-dpop-'));
    server = await startServer(dir);
    tokenUrl = `${server.issuer}/token`;
  });
  after(async () => {
    await stopServer(server);
    await rm(dir, { recursive: true, force: true });
  });

  it('advertises dpop_signing_alg_values_supported in its metadata', async () => {
    const metadata = (await (await fetch(`http://127.0.0.1:${server.port}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    assert.deepEqual(metadata['dpop_signing_alg_values_supported'], ['ES256', 'EdDSA', 'Ed25519', 'PS256']);
  });

  it('binds the token to the proof key: token_type DPoP and cnf.jkt = the RFC 7638 thumbprint', async () => {
    const key = await proofKey();
    const response = await tokenRequest(server, 'demo-caller', SECRET, await proof(key, tokenUrl));
    const body = (await response.json()) as { access_token: string; token_type: string };
    assert.equal(response.status, 200, JSON.stringify(body));
    assert.equal(body.token_type, 'DPoP');
    assert.deepEqual(decodeJwt(body.access_token)['cnf'], { jkt: key.thumbprint });
  });

  it('still issues plain Bearer tokens (no cnf) to a client that does not require DPoP and sends no proof', async () => {
    const response = await tokenRequest(server, 'demo-caller', SECRET);
    const body = (await response.json()) as { access_token: string; token_type: string };
    assert.equal(response.status, 200);
    assert.equal(body.token_type, 'Bearer');
    assert.equal(decodeJwt(body.access_token)['cnf'], undefined);
  });

  it('refuses a proof used twice, a proof for another htu, and one signed with a symmetric alg', async () => {
    const key = await proofKey();
    const once = await proof(key, tokenUrl);
    assert.equal((await tokenRequest(server, 'demo-caller', SECRET, once)).status, 200);
    const replayed = await tokenRequest(server, 'demo-caller', SECRET, once);
    assert.equal(replayed.status, 400);
    assert.match(JSON.stringify(await replayed.json()), /replay/i);

    const elsewhere = await tokenRequest(server, 'demo-caller', SECRET, await proof(key, 'https://other.example/token'));
    assert.equal(elsewhere.status, 400);
    assert.equal(((await elsewhere.json()) as { error: string }).error, 'invalid_dpop_proof');

    const hs256 = await new SignJWT({ htm: 'POST', htu: tokenUrl, jti: randomUUID(), iat: Math.floor(Date.now() / 1000) })
      .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk: { kty: 'oct', k: 'c2VjcmV0' } as JWK })
      .sign(new TextEncoder().encode('secret-secret-secret-secret-secret'));
    const symmetric = await tokenRequest(server, 'demo-caller', SECRET, hs256);
    assert.equal(symmetric.status, 400);
    assert.equal(((await symmetric.json()) as { error: string }).error, 'invalid_dpop_proof');
  });

  it('refuses a token request without a proof from a client registered with dpop_bound_access_tokens, and binds its tokens', async () => {
    const registered = await server.operations.registerClient({ client_id: 'bound-caller', scopes: ['predict'], plan: 'standard', dpop_bound_access_tokens: true });
    assert.equal(registered.client.dpop_bound_access_tokens, true);
    const secret = registered.client_secret!;

    const without = await tokenRequest(server, 'bound-caller', secret);
    const refusal = (await without.json()) as { error: string; error_description: string };
    assert.equal(without.status, 400);
    assert.equal(refusal.error, 'invalid_grant');
    assert.match(refusal.error_description, /DPoP proof JWT not provided/);

    const key = await proofKey();
    const withProof = await tokenRequest(server, 'bound-caller', secret, await proof(key, tokenUrl));
    const body = (await withProof.json()) as { access_token: string; token_type: string };
    assert.equal(withProof.status, 200);
    assert.equal(body.token_type, 'DPoP');
    assert.deepEqual(decodeJwt(body.access_token)['cnf'], { jkt: key.thumbprint });

    // Back to optional: Bearer works again.
    const optional = await server.operations.updateClient('bound-caller', { dpop_bound_access_tokens: false });
    assert.equal(optional.dpop_bound_access_tokens, false);
    assert.equal((await tokenRequest(server, 'bound-caller', secret)).status, 200);
    await assert.rejects(server.operations.updateClient('bound-caller', { dpop_bound_access_tokens: 'yes' }), /dpop_bound_access_tokens must be true or false/);
  });
});

describe('server-provided DPoP nonces at the token endpoint (DPOP_NONCE_SECRET, RFC 9449 section 8)', () => {
  let dir: string;
  let server: RunningAuthServer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'auth-dpop-nonce-'));
    server = await startServer(dir, { DPOP_NONCE_SECRET: 'dpop-nonce-secret-for-the-unit-test-0000' });
  });
  after(async () => {
    await stopServer(server);
    await rm(dir, { recursive: true, force: true });
  });

  it('answers a proof without a nonce with 400 use_dpop_nonce and a DPoP-Nonce, and accepts the retry carrying it', async () => {
    const key = await proofKey();
    const tokenUrl = `${server.issuer}/token`;
    const first = await tokenRequest(server, 'demo-caller', SECRET, await proof(key, tokenUrl));
    assert.equal(first.status, 400);
    assert.equal(((await first.json()) as { error: string }).error, 'use_dpop_nonce');
    const nonce = first.headers.get('dpop-nonce');
    assert.ok(nonce);

    const retry = await tokenRequest(server, 'demo-caller', SECRET, await proof(key, tokenUrl, { nonce }));
    assert.equal(retry.status, 200);
    assert.equal(((await retry.json()) as { token_type: string }).token_type, 'DPoP');

    const forged = await tokenRequest(server, 'demo-caller', SECRET, await proof(key, tokenUrl, { nonce: 'not-a-nonce-of-this-server' }));
    assert.equal(forged.status, 400);
    assert.equal(((await forged.json()) as { error: string }).error, 'use_dpop_nonce');
  });

  it('refuses DPOP_NONCE_REQUIRED=true without a secret, and a short secret', () => {
    assert.throws(() => loadAuthServerConfig({ DEMO_CALLER_SECRET: SECRET, DPOP_NONCE_REQUIRED: 'true' }), /DPOP_NONCE_REQUIRED=true needs DPOP_NONCE_SECRET/);
    assert.throws(() => loadAuthServerConfig({ DEMO_CALLER_SECRET: SECRET, DPOP_NONCE_SECRET: 'short' }), /at least 32 characters/);
  });
});
