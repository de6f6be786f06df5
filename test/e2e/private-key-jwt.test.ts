import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, decodeJwt } from 'jose';
import { AdminClient } from '@m2m/auth-server/admin-client';
import { loadCallerConfig, TokenRequestError, TokenSource } from 'caller';
import { startTypeScript, stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { DEV_ENV, startAuthServer, type RunningAuthServer } from '../src/harness/system.js';

async function clientKey(kid: string) {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  return { kid, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }, privateJwk: { ...(await exportJWK(privateKey)), kid, alg: 'ES256' } };
}

describe('private_key_jwt clients', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let admin: AdminClient;

  before(async () => {
    dataDir = await temporaryDirectory('pkjwt');
    auth = await startAuthServer({ dataDir: dataDir.path });
    admin = new AdminClient(auth.adminUrl, DEV_ENV['ADMIN_TOKEN']!);
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  it('registers a client with its public JWKS; the caller signs its assertion with the private key, picked up from its key file', async () => {
    const first = await clientKey('batch-key-1');
    await admin.registerClient({ client_id: 'batch', auth_method: 'private_key_jwt', scopes: ['predict'], plan: 'standard', jwks: { keys: [first.publicJwk] } });
    const keyFile = `${dataDir.path}/batch-key.json`;
    await writeFile(keyFile, JSON.stringify(first.privateJwk), { mode: 0o600 });
    const config = loadCallerConfig({ CLIENT_ID: 'batch', CLIENT_PRIVATE_KEY_FILE: keyFile, ISSUER: auth.issuer });
    const tokens = new TokenSource({ issuer: auth.issuer, clientId: 'batch', clientKey: config.clientKey! });
    const token = await tokens.getToken();
    assert.equal(decodeJwt(token.value)['client_id'], 'batch');
    assert.equal(decodeJwt(token.value)['scope'], 'predict');

    // Rotate the client's own key: publish old + new, switch the caller's file, then drop the old key.
    const second = await clientKey('batch-key-2');
    await admin.updateClient('batch', { jwks: { keys: [first.publicJwk, second.publicJwk] } });
    await writeFile(keyFile, JSON.stringify(second.privateJwk), { mode: 0o600 });
    tokens.invalidate(token);
    assert.equal(decodeJwt((await tokens.getToken()).value)['client_id'], 'batch');
    await admin.updateClient('batch', { jwks: { keys: [second.publicJwk] } });

    await writeFile(keyFile, JSON.stringify(first.privateJwk), { mode: 0o600 });
    const stale = new TokenSource({ issuer: auth.issuer, clientId: 'batch', clientKey: loadCallerConfig({ CLIENT_ID: 'batch', CLIENT_PRIVATE_KEY_FILE: keyFile }).clientKey! });
    await assert.rejects(stale.getToken(), (error: unknown) => error instanceof TokenRequestError && error.code === 'invalid_client');
  });

  it('the caller CLI authenticates with CLIENT_PRIVATE_KEY_FILE', async () => {
    const key = await clientKey('cli-key');
    await admin.registerClient({ client_id: 'cli-batch', auth_method: 'private_key_jwt', scopes: ['models:read'], plan: 'free', jwks: { keys: [key.publicJwk] } });
    const keyFile = `${dataDir.path}/cli-key.json`;
    await writeFile(keyFile, JSON.stringify(key.privateJwk), { mode: 0o600 });
    const cli = startTypeScript('caller', 'caller/bin/caller.js', { ISSUER: auth.issuer, CLIENT_ID: 'cli-batch', CLIENT_PRIVATE_KEY_FILE: keyFile }, ['token']);
    assert.equal((await cli.exited).code, 0, cli.output());
    assert.equal((JSON.parse(cli.stdoutLines.join('\n')) as { claims: { client_id: string } }).claims.client_id, 'cli-batch');
  });
});
