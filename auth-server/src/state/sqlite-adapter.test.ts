import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ClientAssertionReplayed } from '../client-auth/errors.js';
import { assertionClient, postAssertion, serveProvider, testKeyRing, type AssertionClient } from '../testing/assertion-clients.js';
import { SqliteProviderRecords } from './sqlite-adapter.js';

describe('SqliteProviderRecords (oidc-provider storage of a single auth-server)', () => {
  let dir: string;
  const opened: SqliteProviderRecords[] = [];
  const open = (options: { now?: () => number } = {}) => {
    const records = SqliteProviderRecords.open(join(dir, 'provider-records.sqlite'), options);
    opened.push(records);
    return records;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'provider-records-'));
  });
  after(async () => {
    for (const records of opened) records.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('records a jti once: a second upsert of a live ReplayDetection record is refused, from any connection', async () => {
    const Adapter = open().adapter();
    const OtherConnection = open().adapter();
    await new Adapter('ReplayDetection').upsert('jti-a', { iss: 'svc' }, 60);
    await assert.rejects(new Adapter('ReplayDetection').upsert('jti-a', { iss: 'svc' }, 60), ClientAssertionReplayed);
    await assert.rejects(new OtherConnection('ReplayDetection').upsert('jti-a', { iss: 'svc' }, 60), ClientAssertionReplayed);
    assert.deepEqual(await new OtherConnection('ReplayDetection').find('jti-a'), { iss: 'svc' });
  });

  it('keeps records across a reopen (a restart); expired ones are ignored, replaced and purged', async () => {
    let now = Date.UTC(2026, 10, 23, 12);
    const first = open({ now: () => now });
    await new (first.adapter())('ReplayDetection').upsert('jti-b', { iss: 'svc' }, 30);
    first.close();
    const reopened = open({ now: () => now });
    const Adapter = reopened.adapter();
    await assert.rejects(new Adapter('ReplayDetection').upsert('jti-b', { iss: 'svc' }, 30), ClientAssertionReplayed, 'refused after a reopen');

    now += 30_000;
    assert.equal(await new Adapter('ReplayDetection').find('jti-b'), undefined, 'expired');
    await new Adapter('ReplayDetection').upsert('jti-b', { iss: 'svc', again: true }, 30);
    assert.deepEqual(await new Adapter('ReplayDetection').find('jti-b'), { iss: 'svc', again: true }, 'an expired record is replaced, not a conflict');

    await new Adapter('ReplayDetection').upsert('jti-c', { iss: 'svc' }, 10);
    const before = reopened.count('ReplayDetection');
    now += 10_000;
    assert.equal(reopened.purgeExpired(), 1, 'jti-c expired');
    assert.equal(reopened.count('ReplayDetection'), before - 1);
  });

  it('stores other models like any adapter: upsert overwrites, consume, destroy, expiry', async () => {
    const Adapter = open().adapter();
    const grants = new Adapter('Grant');
    await grants.upsert('g1', { grantId: 'grant-1', accountId: 'a' }, 0);
    await grants.upsert('g1', { grantId: 'grant-1', accountId: 'b' }, 0);
    assert.deepEqual(await grants.find('g1'), { grantId: 'grant-1', accountId: 'b' });
    await grants.consume('g1');
    assert.equal(typeof (await grants.find('g1'))?.consumed, 'number');
    assert.equal(await new Adapter('Other').find('g1'), undefined, 'records are per model');
    await grants.revokeByGrantId!('grant-1');
    assert.equal(await grants.find('g1'), undefined);
  });

  describe('behind oidc-provider', () => {
    let client: AssertionClient;
    before(async () => {
      client = await assertionClient('batch');
    });

    it('accepts an assertion once, also when the same assertion arrives twice at the same instant', async () => {
      const records = open();
      const replica = await serveProvider({ clients: [client.stored], adapter: records.adapter(), keys: await testKeyRing() });
      try {
        for (let round = 0; round < 10; round += 1) {
          const assertion = await client.assertion();
          const answers = await Promise.all([postAssertion(replica.tokenEndpoint, assertion), postAssertion(replica.tokenEndpoint, assertion)]);
          assert.deepEqual(answers.map((answer) => answer.status).sort(), [200, 401], `round ${round}`);
          const refused = answers.find((answer) => answer.status === 401)!;
          // oidc-provider's own find refuses it ("client authentication failed") unless both found nothing; then the atomic insert does ("already used").
          assert.equal(refused.body['error'], 'invalid_client');
        }
      } finally {
        await replica.close();
      }
    });

    it('refuses the assertion on a provider built later on the same file (a rebuild or a restart)', async () => {
      const assertion = await client.assertion();
      const first = await serveProvider({ clients: [client.stored], adapter: open().adapter() });
      assert.equal((await postAssertion(first.tokenEndpoint, assertion)).status, 200);
      await first.close();
      const rebuilt = await serveProvider({ clients: [client.stored], adapter: open().adapter() });
      try {
        const again = await postAssertion(rebuilt.tokenEndpoint, assertion);
        assert.equal(again.status, 401);
        assert.equal(again.body['error'], 'invalid_client');
      } finally {
        await rebuilt.close();
      }
    });
  });
});
