import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { AdminClient } from '@m2m/auth-server';
import { rememberSecret, startTypeScript, stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { DEV_ENV, requestToken, startAuthServer, type RunningAuthServer } from '../src/harness/system.js';

describe('auth-server operations through the admin API', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let admin: AdminClient;
  const callerSecret = DEV_ENV['DEMO_CALLER_SECRET']!;

  before(async () => {
    dataDir = await temporaryDirectory('admin');
    auth = await startAuthServer({ dataDir: dataDir.path, env: { KEY_PROPAGATION_SECONDS: '0', ACCESS_TOKEN_TTL: '60' } });
    admin = new AdminClient(auth.adminUrl, DEV_ENV['ADMIN_TOKEN']!);
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  const jwksKids = async () => ((await (await fetch(`${auth.issuer}/jwks`)).json()) as { keys: { kid: string }[] }).keys.map((key) => key.kid);
  const tokenFor = async (clientId: string, secret: string, scope = 'predict') => requestToken(auth.issuer, clientId, secret, { scope });

  it('refuses admin requests without the admin token, and listens on loopback', async () => {
    assert.match(auth.adminUrl, /^http:\/\/127\.0\.0\.1:/);
    assert.equal((await fetch(`${auth.adminUrl}/keys`)).status, 401);
    assert.equal((await fetch(`${auth.adminUrl}/keys`, { headers: { authorization: 'Bearer wrong-token' } })).status, 401);
  });

  it('publishes next ahead of use and rotates next → current → previous while 20 token loops run, without one failed token request', async () => {
    const [current, next] = await admin.listKeys();
    assert.deepEqual([current?.state, next?.state], ['current', 'next']);
    assert.deepEqual((await jwksKids()).sort(), [current!.kid, next!.kid].sort());
    let stop = false;
    const statuses: number[] = [];
    const loops = Array.from({ length: 20 }, async () => {
      while (!stop) statuses.push((await tokenFor('demo-caller', callerSecret)).status);
    });
    for (let rotation = 0; rotation < 3; rotation += 1) {
      const before = statuses.length;
      await admin.rotateKeys();
      while (statuses.length < before + 40) await new Promise((resolve) => setImmediate(resolve));
    }
    stop = true;
    await Promise.all(loops);
    assert.ok(statuses.length > 120);
    assert.deepEqual([...new Set(statuses)], [200], 'every token request during the swaps succeeded');
    const keys = await admin.listKeys();
    const signing = keys.find((key) => key.state === 'current')!;
    const { body } = await tokenFor('demo-caller', callerSecret);
    assert.equal(decodeProtectedHeader(body['access_token'] as string).kid, signing.kid, 'new tokens carry the new kid');
    assert.ok(keys.some((key) => key.kid === current!.kid && key.state === 'previous'), 'the first key is still published as previous');
    assert.ok((await jwksKids()).includes(current!.kid));
  });

  it('revokes a key: it leaves the JWKS at once and, if it was current, next signs', async () => {
    const before = await admin.listKeys();
    const current = before.find((key) => key.state === 'current')!;
    const next = before.find((key) => key.state === 'next')!;
    await admin.revokeKey(current.kid);
    assert.ok(!(await jwksKids()).includes(current.kid));
    const { body } = await tokenFor('demo-caller', callerSecret);
    assert.equal(decodeProtectedHeader(body['access_token'] as string).kid, next.kid);
  });

  it('rotates a client secret with an overlap: both work until the old one is retired, then it is invalid_client', async () => {
    const { client_secret: secret } = await admin.rotateClientSecret('demo-free', 600);
    rememberSecret(secret);
    assert.equal((await tokenFor('demo-free', DEV_ENV['DEMO_FREE_SECRET']!)).status, 200);
    assert.equal((await tokenFor('demo-free', secret)).status, 200);
    await admin.retirePreviousSecret('demo-free');
    const old = await tokenFor('demo-free', DEV_ENV['DEMO_FREE_SECRET']!);
    assert.equal(old.status, 401);
    assert.equal(old.body['error'], 'invalid_client');
    assert.equal((await tokenFor('demo-free', secret)).status, 200);
  });

  it('changes a client scopes: the next token lacks the removed scope and asking for it is invalid_scope', async () => {
    await admin.updateClient('demo-caller', { scopes: ['models:read'] });
    assert.equal((await tokenFor('demo-caller', callerSecret, 'predict')).body['error'], 'invalid_scope');
    assert.equal(decodeJwt((await tokenFor('demo-caller', callerSecret, 'models:read')).body['access_token'] as string)['scope'], 'models:read');
    await admin.updateClient('demo-caller', { scopes: ['predict', 'models:read'] });
  });

  it('disables and re-enables a client', async () => {
    await admin.updateClient('demo-readonly', { disabled: true });
    assert.equal((await tokenFor('demo-readonly', DEV_ENV['DEMO_READONLY_SECRET']!, 'models:read')).body['error'], 'invalid_client');
    await admin.updateClient('demo-readonly', { disabled: false });
    assert.equal((await tokenFor('demo-readonly', DEV_ENV['DEMO_READONLY_SECRET']!, 'models:read')).status, 200);
  });

  it('keeps keys and registrations across a restart', async () => {
    const { client_secret: secret } = await admin.rotateClientSecret('demo-free', 0);
    rememberSecret(secret);
    const keys = await admin.listKeys();
    await auth.process.stop();
    auth = await startAuthServer({ dataDir: dataDir.path, env: { KEY_PROPAGATION_SECONDS: '0', ACCESS_TOKEN_TTL: '60' } });
    admin = new AdminClient(auth.adminUrl, DEV_ENV['ADMIN_TOKEN']!);
    assert.deepEqual((await admin.listKeys()).map((key) => key.kid), keys.map((key) => key.kid));
    assert.equal((await tokenFor('demo-free', secret)).status, 200);
    assert.equal((await tokenFor('demo-free', DEV_ENV['DEMO_FREE_SECRET']!)).status, 401);
  });

  it('logs every change, without secrets, and the admin CLI wraps the API', async () => {
    const cli = startTypeScript('admin', 'auth-server/src/admin-cli.ts', { ADMIN_URL: auth.adminUrl, ADMIN_TOKEN: DEV_ENV['ADMIN_TOKEN']! }, ['keys', 'list']);
    assert.equal((await cli.exited).code, 0, cli.output());
    assert.equal((JSON.parse(cli.stdoutLines.join('\n')) as unknown[]).length >= 2, true);
    await admin.updateClient('demo-free', { plan: 'standard' });
    await tokenFor('demo-free', 'wrong');
    const stats = await admin.stats();
    assert.ok(stats.tokenRequests > 0 && stats.tokensIssued >= 0);
    const events = auth.process.records.map((record) => record['event']);
    assert.ok(events.includes('admin.clients.updated'));
  });
});
