import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { UsageEvent } from '@m2m/common';
import { TcpFaultProxy } from '../../../predictor/src/testing/tcp-fault-proxy.js';
import { silentLogger, TEST_NATS_URL, withTestNats } from '../testing/nats.js';
import { JetStreamUsageSink } from './sink.js';
import { skipUnlessEngines } from '../../../common/src/testing/skip-unless-engines.js';
import { usageEventFixture } from '../../../common/src/testing/usage-event-fixture.js';

const event = (id: string): UsageEvent => usageEventFixture(id);

describe('JetStreamUsageSink', { skip: skipUnlessEngines(['nats']) }, () => {
  const nats = withTestNats();

  it('fails a round while the broker is unreachable at first use, then connects, creates the stream and delivers once it is there', { timeout: 30_000 }, async () => {
    const names = nats.names('sink');
    const { proxy, url } = await TcpFaultProxy.forUrl(TEST_NATS_URL, 4222);
    const sink = new JetStreamUsageSink({ url, name: 'sink-test', logger: silentLogger, ...names });
    try {
      proxy.set('refuse');
      await assert.rejects(sink.deliver([event('pred_1')]));
      proxy.set('up');
      assert.deepEqual(await sink.deliver([event('pred_1'), event('pred_2')]), new Set(['pred_1', 'pred_2']));
      // The same ids again (a relay that died before marking them): acknowledged, stored once.
      assert.deepEqual(await sink.deliver([event('pred_1')]), new Set(['pred_1']));
      const info = await nats.jsm().streams.info(names.stream);
      assert.equal(info.state.messages, 2);
    } finally {
      await sink.close();
      await proxy.close();
    }
  });

  it('delivers nothing for an empty round, without connecting', async () => {
    const sink = new JetStreamUsageSink({ url: 'nats://127.0.0.1:1', name: 'sink-test', logger: silentLogger });
    assert.deepEqual(await sink.deliver([]), new Set());
    await sink.close();
  });
});
