import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { AdminClient } from '@m2m/auth-server/admin-client';
import { freePort, stopAll, temporaryDirectory, type LogRecord } from '../src/harness/processes.js';
import { DEV_ENV, startAuthServer, type RunningAuthServer } from '../src/harness/system.js';

/**
 * Used private_key_jwt assertions stay refused (items 1 and 2 of the security issue): the
 * replay records live in DATA_DIR/provider-records.sqlite, not in a provider's memory.
 */

interface Signer {
  clientId: string;
  sign(options?: { jti?: string; iat?: number | null; lifetimeSeconds?: number }): Promise<string>;
}

async function registerSigner(admin: AdminClient, clientId: string, audience: string): Promise<Signer> {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  const kid = `${clientId}-key`;
  await admin.registerClient({ client_id: clientId, auth_method: 'private_key_jwt', scopes: ['predict'], plan: 'standard', jwks: { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }] } });
  return {
    clientId,
    sign: (options = {}) => {
      const now = Math.floor(Date.now() / 1000);
      const iat = options.iat === undefined ? now : options.iat;
      const jwt = new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid }).setIssuer(clientId).setSubject(clientId).setAudience(audience).setJti(options.jti ?? randomUUID());
      jwt.setExpirationTime((iat ?? now) + (options.lifetimeSeconds ?? 60));
      if (iat !== null) jwt.setIssuedAt(iat);
      return jwt.sign(privateKey as CryptoKey);
    },
  };
}

async function present(issuer: string, assertion: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

describe('private_key_jwt assertions: used once, short-lived (auth-server process, files state)', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let admin: AdminClient;
  let batch: Signer;
  let flood: Signer;
  /** Signed once, accepted once: every step below presents it again. Valid for 4 min (under the 5 min bound). */
  let used: string;

  /** Refused, and for being a replay (the server's log says why), not for anything else. */
  const refusedAsReplay = async (step: string) => {
    const earlier = new Set<LogRecord>(auth.process.records);
    const again = await present(auth.issuer, used);
    assert.equal(again.status, 401, `${step}: ${JSON.stringify(again.body)}`);
    assert.equal(again.body['error'], 'invalid_client');
    const refusal = await auth.process.waitForLog((record) => !earlier.has(record) && record['event'] === 'token.refused' && record['clientId'] === 'replay-batch', `${step}: token.refused`);
    assert.match(String(refusal['detail']), /must only be used once|already used/, step);
    assert.equal((await present(auth.issuer, await batch.sign())).status, 200, `${step}: a fresh assertion of the same client is accepted`);
  };
  /** A fixed port: the issuer, hence the assertions' audience, stays the same across the restart. */
  let env: Record<string, string>;

  before(async () => {
    dataDir = await temporaryDirectory('assertion-replay');
    env = { AUTH_PORT: String(await freePort()) };
    auth = await startAuthServer({ dataDir: dataDir.path, env });
    admin = new AdminClient(auth.adminUrl, DEV_ENV['ADMIN_TOKEN']!);
    batch = await registerSigner(admin, 'replay-batch', auth.issuer);
    flood = await registerSigner(admin, 'replay-flood', auth.issuer);
    used = await batch.sign({ lifetimeSeconds: 240 });
    assert.equal((await present(auth.issuer, used)).status, 200, 'first use');
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  it('has a real adapter: no "development-only in-memory adapter" warning at start', () => {
    assert.doesNotMatch(auth.process.output(), /in-memory adapter/);
  });

  it('refuses the used assertion again at once', async () => {
    await refusedAsReplay('second use');
  });

  it('refuses it after an admin change (the provider is rebuilt)', async () => {
    await admin.updateClient('replay-flood', { plan: 'free' });
    await refusedAsReplay('after a provider rebuild');
  });

  it('refuses it after 3 000 assertions of another client (nothing can flush the records)', async () => {
    let accepted = 0;
    const worker = async (count: number) => {
      for (let i = 0; i < count; i += 1) {
        const answer = await present(auth.issuer, await flood.sign());
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        accepted += 1;
      }
    };
    await Promise.all(Array.from({ length: 12 }, () => worker(250)));
    assert.equal(accepted, 3_000);
    await refusedAsReplay('after 3 000 other assertions');
  });

  it('refuses it after a restart of the auth-server on the same data directory', async () => {
    const result = await auth.process.stop();
    assert.equal(result.code, 0);
    auth = await startAuthServer({ dataDir: dataDir.path, env });
    await refusedAsReplay('after a restart');
  });

  it('refuses an assertion valid for longer than 5 minutes (CLIENT_ASSERTION_MAX_LIFETIME), saying why', async () => {
    for (const [label, options] of [
      ['valid for a year', { lifetimeSeconds: 365 * 86_400 }],
      ['no iat, exp in an hour', { iat: null, lifetimeSeconds: 3_600 }],
      ['301 s from iat', { lifetimeSeconds: 301 }],
    ] as const) {
      const answer = await present(auth.issuer, await batch.sign(options));
      assert.equal(answer.status, 401, label);
      assert.equal(answer.body['error'], 'invalid_client', label);
      assert.match(String(answer.body['error_description']), /client assertion lifetime too long: \d+ s, at most 300 s/, label);
    }
    assert.equal((await present(auth.issuer, await batch.sign({ lifetimeSeconds: 300 }))).status, 200, 'exactly 5 minutes is accepted');
    assert.equal((await present(auth.issuer, await batch.sign({ iat: null, lifetimeSeconds: 60 }))).status, 200, 'no iat, short exp: accepted');
  });
});
