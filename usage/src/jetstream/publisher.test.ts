import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { TcpFaultProxy } from '../../../predictor/src/testing/tcp-fault-proxy.js';
import { testUsageEvent } from '../testing/fake-ledger.js';
import { silentLogger, TEST_NATS_URL, waitFor, withTestNats } from '../testing/nats.js';
import { connectNats } from './connection.js';
import { NatsUnavailable, UsagePublishFailed } from './errors.js';
import { JetStreamUsagePublisher } from './publisher.js';
import { ensureUsageStream } from './stream.js';
import { skipUnlessEngines } from '../../../common/src/testing/skip-unless-engines.js';

describe('JetStreamUsagePublisher', { skip: skipUnlessEngines(['nats']) }, () => {
  const nats = withTestNats();

  async function streamMessages(stream: string): Promise<number> {
    return (await nats.jsm().streams.info(stream)).state.messages;
  }

  it('stores an event once when it is published twice with the same id; the second ack says duplicate', async () => {
    const names = nats.names('dup');
    await ensureUsageStream(nats.jsm(), names);
    const publisher = new JetStreamUsagePublisher(nats.nats(), names);
    const event = testUsageEvent();
    const first = await publisher.publish(event);
    const second = await publisher.publish(event);
    assert.deepEqual(first, { stream: names.stream, seq: 1, duplicate: false });
    assert.deepEqual(second, { stream: names.stream, seq: 1, duplicate: true });
    assert.equal(await streamMessages(names.stream), 1);
    const stored = await nats.jsm().streams.getMessage(names.stream, { seq: 1 });
    assert.equal(stored!.subject, `${names.subjectPrefix}.client-a`);
    assert.equal(stored!.header.get('Nats-Msg-Id'), event.id);
    assert.equal(publisher.healthy(), true);
  });

  it('publishes a batch concurrently and tells exactly which ids were acknowledged', async () => {
    const names = nats.names('batch');
    await ensureUsageStream(nats.jsm(), names);
    const publisher = new JetStreamUsagePublisher(nats.nats(), names);
    const events = [testUsageEvent(), testUsageEvent({ clientId: 'client-b' }), testUsageEvent()];
    const result = await publisher.publishBatch([...events, events[0]!]);
    assert.deepEqual(result.acknowledged, new Set(events.map((event) => event.id)));
    assert.deepEqual(result.failed, []);
    assert.equal(await streamMessages(names.stream), 3);
  });

  it('rejects with a typed reason when no stream takes the subject, or another stream would', async () => {
    const names = nats.names('reject');
    await ensureUsageStream(nats.jsm(), names);
    const event = testUsageEvent();
    const nowhere = new JetStreamUsagePublisher(nats.nats(), { ...names, subjectPrefix: `${names.subjectPrefix}-none`, timeoutMs: 2000 });
    await assert.rejects(nowhere.publish(event), (error) => error instanceof UsagePublishFailed && error.reason === 'no-stream' && error.eventId === event.id);
    assert.equal(nowhere.healthy(), false);
    const wrongStream = new JetStreamUsagePublisher(nats.nats(), { ...names, stream: `${names.stream}_OTHER` });
    const result = await wrongStream.publishBatch([event]);
    assert.deepEqual(result.acknowledged, new Set());
    assert.equal(result.failed[0]!.error.reason, 'rejected');
    assert.equal(await streamMessages(names.stream), 0);
  });

  it('fails fast, naming the URL without its password, when the broker does not answer the first connection', async () => {
    const port = await closedPort();
    const started = Date.now();
    await assert.rejects(connectNats({ url: `nats://usage:s3cret@127.0.0.1:${port}`, name: 'test', logger: silentLogger }), (error) => {
      assert.ok(error instanceof NatsUnavailable);
      assert.doesNotMatch(error.message, /s3cret/);
      assert.match(error.message, /usage:\*\*\*@127\.0\.0\.1/);
      return true;
    });
    assert.ok(Date.now() - started < 2000);
  });

  it('rejects within its timeout while the broker is cut, and publishes again once it is back, without a restart', async () => {
    const names = nats.names('outage');
    await ensureUsageStream(nats.jsm(), names);
    const { proxy, url } = await TcpFaultProxy.forUrl(TEST_NATS_URL, 4222);
    try {
      const handle = await nats.connect({ url, reconnectWaitMs: 100, pingIntervalMs: 300, connectTimeoutMs: 1000 });
      const publisher = new JetStreamUsagePublisher(handle, { ...names, timeoutMs: 500 });
      await publisher.publish(testUsageEvent());

      for (const fault of ['refuse', 'blackhole'] as const) {
        proxy.set(fault);
        const started = Date.now();
        await assert.rejects(publisher.publish(testUsageEvent()), (error) => error instanceof UsagePublishFailed && error.reason === 'timeout');
        assert.ok(Date.now() - started < 1500, `${fault}: rejected after ${Date.now() - started} ms`);
        assert.equal(publisher.healthy(), false);
        proxy.set('up');
        await waitFor(async () => (await publisher.publish(testUsageEvent()).then(() => true, () => false)), 10_000, `publish after ${fault}`);
        assert.equal(publisher.healthy(), true);
      }
    } finally {
      await proxy.close();
    }
  });
});

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
