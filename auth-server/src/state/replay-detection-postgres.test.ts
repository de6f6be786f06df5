import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TEST_DATABASE_URL, withTestDatabase } from '../../../predictor/src/testing/engines.js';
import { ClientAssertionReplayed } from '../client-auth/errors.js';
import { assertionClient, postAssertion, serveProvider, testKeyRing } from '../testing/assertion-clients.js';
import { postgresAdapter, purgeExpiredModels } from './oidc-adapter.js';
import { PostgresStateStorage } from './postgres-state.js';
import { skipUnlessEngines } from '../../../common/src/testing/skip-unless-engines.js';

/** Replicas sharing PostgreSQL: a private_key_jwt assertion is accepted once in all, even presented to two at the same instant. */
describe('ReplayDetection on PostgreSQL (auth-server replicas)', { skip: skipUnlessEngines(['postgres']) }, () => {
  const database = withTestDatabase();
  const opened: PostgresStateStorage[] = [];
  let schema: string;

  /** One replica's connection pool on the shared schema. */
  async function replica(): Promise<PostgresStateStorage> {
    const storage = await PostgresStateStorage.open({ connectionString: TEST_DATABASE_URL, schema });
    opened.push(storage);
    return storage;
  }

  before(() => {
    schema = database.schema('replay');
  });
  after(async () => {
    await Promise.all(opened.map((storage) => storage.close()));
  });

  it('two adapters upserting the same jti at once (oidc-provider\'s find-then-insert): exactly one records it, the other is refused', async () => {
    const [a, b] = [await replica(), await replica()];
    const AdapterA = postgresAdapter(a.pool, a.schema);
    const AdapterB = postgresAdapter(b.pool, b.schema);
    for (let round = 0; round < 50; round += 1) {
      const id = `jti-${round}`;
      // What ReplayDetection.unique does on each replica: find (nothing yet), then upsert.
      const unique = async (Adapter: typeof AdapterA) => {
        const adapter = new Adapter('ReplayDetection');
        if (await adapter.find(id)) return 'found';
        await adapter.upsert(id, { iss: 'svc', jti: id }, 60);
        return 'recorded';
      };
      const outcomes = await Promise.allSettled([unique(AdapterA), unique(AdapterB)]);
      const recorded = outcomes.filter((outcome) => outcome.status === 'fulfilled' && outcome.value === 'recorded');
      assert.equal(recorded.length, 1, `round ${round}: ${JSON.stringify(outcomes.map((outcome) => (outcome.status === 'fulfilled' ? outcome.value : (outcome.reason as Error).name)))}`);
      for (const outcome of outcomes) {
        if (outcome.status === 'rejected') assert.ok(outcome.reason instanceof ClientAssertionReplayed);
      }
    }
  });

  it('two replicas presented the same assertion concurrently accept it once (real token requests)', async () => {
    const client = await assertionClient('batch');
    const keys = await testKeyRing();
    const [a, b] = [await replica(), await replica()];
    const replicaA = await serveProvider({ clients: [client.stored], adapter: postgresAdapter(a.pool, a.schema), keys });
    const replicaB = await serveProvider({ clients: [client.stored], adapter: postgresAdapter(b.pool, b.schema), keys });
    try {
      for (let round = 0; round < 20; round += 1) {
        const assertion = await client.assertion();
        const answers = await Promise.all([postAssertion(replicaA.tokenEndpoint, assertion), postAssertion(replicaB.tokenEndpoint, assertion)]);
        assert.deepEqual(answers.map((answer) => answer.status).sort(), [200, 401], `round ${round}`);
        assert.equal(answers.find((answer) => answer.status === 401)!.body['error'], 'invalid_client');
        // And later, on either replica: still refused.
        assert.equal((await postAssertion(replicaB.tokenEndpoint, assertion)).status, 401);
      }
    } finally {
      await replicaA.close();
      await replicaB.close();
    }
  });

  it('replaces an expired record that the purge has not removed yet, and the purge removes expired ones', async () => {
    const storage = await replica();
    const replay = new (postgresAdapter(storage.pool, storage.schema))('ReplayDetection');
    await replay.upsert('old-jti', { iss: 'svc' }, 60);
    await assert.rejects(replay.upsert('old-jti', { iss: 'svc' }, 60), ClientAssertionReplayed);
    await database.admin().query(`UPDATE "${schema}".oidc_models SET expires_at = now() - interval '1 second' WHERE id = 'old-jti'`);
    await replay.upsert('old-jti', { iss: 'svc', again: true }, 60);
    assert.deepEqual(await replay.find('old-jti'), { iss: 'svc', again: true });

    await database.admin().query(`UPDATE "${schema}".oidc_models SET expires_at = now() - interval '1 second'`);
    assert.ok((await purgeExpiredModels(storage.pool, storage.schema)) >= 1);
    const { rows } = await database.admin().query(`SELECT count(*)::int AS n FROM "${schema}".oidc_models`);
    assert.deepEqual(rows, [{ n: 0 }]);
  });
});
