import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { requirePostgres, TEST_DATABASE_URL, uniqueSchemaName } from '../../../predictor/src/testing/engines.js';
import { createLogger } from '@m2m/common';
import { ClientRegistry, type StoredClient } from '../clients/registry.js';
import { KeyRing } from '../keys/key-ring.js';
import { newSigningKeyFile } from '../keys/signing-key-file.js';
import { AuthOperations } from '../operations.js';
import { postgresAdapter } from './oidc-adapter.js';
import { PostgresStateStorage } from './postgres-state.js';
import { StateConflict } from './storage.js';
import { skipUnlessEngines } from '../../../common/src/testing/skip-unless-engines.js';

const NOW = new Date(Date.UTC(2026, 10, 23, 12));
const CLIENT: StoredClient = { clientId: 'svc', authMethod: 'client_secret_basic', secretSha256: 'ab'.repeat(32), scopes: ['predict'], plan: 'standard', disabled: false, updatedAt: NOW.toISOString() };

describe('PostgresStateStorage (auth-server replicas)', { skip: skipUnlessEngines(['postgres']) }, () => {
  const schemas: string[] = [];
  const opened: PostgresStateStorage[] = [];
  let admin: pg.Client;

  async function open(schema: string): Promise<PostgresStateStorage> {
    const storage = await PostgresStateStorage.open({ connectionString: TEST_DATABASE_URL, schema });
    opened.push(storage);
    return storage;
  }

  function newSchema(): string {
    const schema = uniqueSchemaName('auth');
    schemas.push(schema);
    return schema;
  }

  before(async () => {
    await requirePostgres();
    admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
  });

  after(async () => {
    await Promise.all(opened.map((storage) => storage.close()));
    for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await admin.end();
  });

  it('lets the first of two replicas starting at once seed the state, and both read the same', async () => {
    const schema = newSchema();
    const [a, b] = await Promise.all([open(schema), open(schema)]);
    const [stateA, stateB] = await Promise.all([
      a.load({ keys: () => newSigningKeyFile('keys-generate', NOW), clients: () => [CLIENT] }),
      b.load({ keys: () => newSigningKeyFile('keys-generate', NOW), clients: () => [{ ...CLIENT, clientId: 'other' }] }),
    ]);
    assert.deepEqual(stateA.keys, stateB.keys);
    assert.deepEqual(stateA.clients, stateB.clients);
    const { rows } = await admin.query(`SELECT version FROM "${schema}".auth_schema_version`);
    assert.deepEqual(rows, [{ version: 1 }], 'migrated once');
  });

  it('refuses a write based on a state another replica has changed, then adopts that state', async () => {
    const schema = newSchema();
    const a = await open(schema);
    const b = await open(schema);
    const initial = { keys: () => newSigningKeyFile('keys-generate', NOW), clients: () => [CLIENT] };
    await a.load(initial);
    await b.load(initial);

    await a.saveClients([{ ...CLIENT, plan: 'free' }]);
    await assert.rejects(b.saveClients([{ ...CLIENT, scopes: ['models:read'] }]), StateConflict);
    const pulled = await b.pullChanges();
    assert.deepEqual(pulled.clients?.map((client) => client.plan), ['free']);
    assert.equal(pulled.keys, undefined, 'the keys did not change');
    await b.saveClients([{ ...CLIENT, plan: 'free', scopes: ['models:read'] }]);
    assert.deepEqual((await a.pullChanges()).clients?.[0]?.scopes, ['models:read']);
    assert.deepEqual(await a.pullChanges(), {}, 'nothing new since');
  });

  it('gives oidc-provider shared records that expire and can be consumed', async () => {
    const schema = newSchema();
    const storage = await open(schema);
    const Adapter = postgresAdapter(storage.pool, storage.schema);
    const replay = new Adapter('ReplayDetection');
    await replay.upsert('jti-1', { iss: 'svc', jti: 'jti-1' }, 60);
    await replay.upsert('jti-gone', { iss: 'svc' }, 60);
    assert.deepEqual(await new Adapter('ReplayDetection').find('jti-1'), { iss: 'svc', jti: 'jti-1' }, 'another replica sees it');
    assert.equal(await new Adapter('Other').find('jti-1'), undefined, 'records are per model');
    await replay.consume('jti-1');
    assert.equal(typeof (await replay.find('jti-1'))?.consumed, 'number');
    await replay.destroy('jti-gone');
    assert.equal(await replay.find('jti-gone'), undefined);
    await admin.query(`UPDATE "${schema}".oidc_models SET expires_at = now() - interval '1 second'`);
    assert.equal(await replay.find('jti-1'), undefined, 'an expired record is gone');
  });

  it('retries an admin change that raced another replica on the state that replica wrote, losing neither', async () => {
    const schema = newSchema();
    const initial = { keys: () => newSigningKeyFile('keys-generate', NOW), clients: () => [CLIENT] };
    const replica = async () => {
      const storage = await open(schema);
      const state = await storage.load(initial);
      const registry = new ClientRegistry(state.clients, (clients) => storage.saveClients(clients));
      const ring = new KeyRing(state.keys, { propagationMs: 0, tokenLifetimeMs: 60_000 });
      return new AuthOperations(ring, { registry, storage, rebuild: async () => {}, logger: createLogger('auth-server', 'silent') });
    };
    const a = await replica();
    const b = await replica();
    const rotatedByA = (await a.rotateKeys({})).find((key) => key.state === 'current')!.kid;
    // B has not pulled A's rotation: its write conflicts, it adopts A's keys and rotates again from there.
    const keysOfB = await b.rotateKeys({});
    assert.equal(keysOfB.find((key) => key.state === 'previous' && key.kid === rotatedByA)?.state, 'previous', 'A\'s key was rotated out, not lost');
    assert.equal(keysOfB.filter((key) => key.state === 'previous').length, 2);
    await a.pullChanges();
    assert.deepEqual(a.listKeys(), keysOfB);
  });
});
