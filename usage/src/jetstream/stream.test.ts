import { jetstreamManager, StorageType } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { withTestNats } from '../testing/nats.js';
import { UsageStreamConflict } from './errors.js';
import { DEFAULT_DUPLICATE_WINDOW_MS, ensureUsageStream, usageSubjectIn } from './stream.js';
import { skipUnlessEngines } from '../../../common/src/testing/skip-unless-engines.js';

describe('the usage stream', { skip: skipUnlessEngines(['nats']) }, () => {
  const nats = withTestNats();

  it('is created by several processes at once without any of them failing', async () => {
    const names = nats.names('create');
    const processes = await Promise.all([1, 2, 3].map(() => nats.connect()));
    const managers = await Promise.all(processes.map((process) => jetstreamManager(process.nc)));
    const infos = await Promise.all(managers.map((jsm) => ensureUsageStream(jsm, names)));
    for (const info of infos) assert.equal(info.config.name, names.stream);
    const { config } = await nats.jsm().streams.info(names.stream);
    assert.deepEqual(config.subjects, [`${names.subjectPrefix}.>`]);
    assert.equal(config.storage, StorageType.File);
    assert.equal(config.retention, 'limits');
    assert.equal(config.duplicate_window, nanos(DEFAULT_DUPLICATE_WINDOW_MS));
  });

  it('takes a changed setting on an existing stream', async () => {
    const names = nats.names('update');
    await ensureUsageStream(nats.jsm(), names);
    const info = await ensureUsageStream(nats.jsm(), { ...names, maxAgeMs: 60 * 60 * 1000 });
    assert.equal(info.config.max_age, nanos(60 * 60 * 1000));
  });

  it('refuses, with a typed error, a stream whose storage cannot change in place', async () => {
    const names = nats.names('conflict');
    await nats.jsm().streams.add({ name: names.stream, subjects: [`${names.subjectPrefix}.>`], storage: StorageType.Memory });
    await assert.rejects(ensureUsageStream(nats.jsm(), names), UsageStreamConflict);
  });

  it('puts each client on its own subject under the prefix', () => {
    assert.equal(usageSubjectIn('client-a'), 'usage.predictions.client-a');
    assert.equal(usageSubjectIn('a.b', 'test.x.usage.predictions'), 'test.x.usage.predictions.a~2eb');
  });
});
