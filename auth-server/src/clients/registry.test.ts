import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ClientRegistry, ClientRegistryError, sha256Hex } from './registry.js';

async function registry() {
  const dir = await mkdtemp(join(tmpdir(), 'registry-'));
  let now = new Date(Date.UTC(2026, 10, 23, 12));
  const clock = { now: () => now, advance: (ms: number) => (now = new Date(now.getTime() + ms)) };
  const path = join(dir, 'client-registrations.json');
  const seed = () => [{ clientId: 'svc', authMethod: 'client_secret_basic' as const, secretSha256: sha256Hex('first-secret'), scopes: ['predict'], plan: 'standard', disabled: false, updatedAt: now.toISOString() }];
  const { registry: clients } = await ClientRegistry.open(path, seed, clock.now);
  return { clients, clock, path, reopen: () => ClientRegistry.open(path, seed, clock.now), remove: () => rm(dir, { recursive: true }) };
}

describe('ClientRegistry', () => {
  it('accepts the old and the new secret during the overlap window, only the new one after it', async () => {
    const { clients, clock, remove } = await registry();
    const { secret } = await clients.rotateSecret('svc', 300);
    assert.ok(clients.verifySecret('svc', 'first-secret'));
    assert.ok(clients.verifySecret('svc', secret));
    clock.advance(300_000);
    assert.ok(!clients.verifySecret('svc', 'first-secret'));
    assert.ok(clients.verifySecret('svc', secret));
    await remove();
  });

  it('retires the previous secret on demand', async () => {
    const { clients, remove } = await registry();
    await clients.rotateSecret('svc', 3600);
    await clients.retirePreviousSecret('svc');
    assert.ok(!clients.verifySecret('svc', 'first-secret'));
    await remove();
  });

  it('persists registrations with hashed secrets only (mode 0600) and reloads them', async () => {
    const { clients, path, reopen, remove } = await registry();
    const { secret } = await clients.rotateSecret('svc', 60);
    await clients.update('svc', { scopes: ['models:read'] });
    const text = await readFile(path, 'utf8');
    assert.ok(!text.includes(secret) && !text.includes('first-secret'));
    const { stat } = await import('node:fs/promises');
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const { registry: reloaded, seeded } = await reopen();
    assert.equal(seeded, false);
    assert.ok(reloaded.verifySecret('svc', secret));
    assert.deepEqual(reloaded.get('svc').scopes, ['models:read']);
    await remove();
  });

  it('registers private_key_jwt clients only with public keys, and refuses duplicates', async () => {
    const { clients, remove } = await registry();
    await assert.rejects(clients.register({ clientId: 'jwt', authMethod: 'private_key_jwt', scopes: ['predict'], plan: 'free' }), ClientRegistryError);
    const { secret } = await clients.register({ clientId: 'jwt', authMethod: 'private_key_jwt', scopes: ['predict'], plan: 'free', jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', kid: 'k1' }] } });
    assert.equal(secret, undefined);
    await assert.rejects(clients.register({ clientId: 'svc', authMethod: 'client_secret_basic', scopes: [], plan: 'free' }), (error: unknown) => error instanceof ClientRegistryError && error.status === 409);
    await remove();
  });
});
