import { encodeUsageEvent } from '@m2m/common';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { TcpFaultProxy } from '../../../predictor/src/testing/tcp-fault-proxy.js';
import { SqliteUsageLedger } from '../ledger-sqlite.js';
import type { UsageLedger } from '../ledger.js';
import { FakeLedger, testUsageEvent } from '../testing/fake-ledger.js';
import { NATS_SERVER_BINARY, PrivateNatsServer } from '../testing/nats-server.js';
import { silentLogger, TEST_NATS_URL, uniqueUsageStreamNames, waitFor, withTestNats } from '../testing/nats.js';
import type { NatsHandle } from './connection.js';
import { UsageConsumerConnectionClosed, UsagePublishFailed } from './errors.js';
import { JetStreamUsagePublisher } from './publisher.js';
import { ensureUsageStream, usageSubjectIn, type UsageStreamNames } from './stream.js';
import { newUsageConsumerStats, runUsageConsumer, type UsageConsumerOptions } from './consumer.js';
import { skipUnlessEngines } from '../../../common/src/testing/skip-unless-engines.js';

describe('runUsageConsumer', { skip: skipUnlessEngines(['nats']) }, () => {
  const nats = withTestNats();
  const running: Array<{ controller: AbortController; done: Promise<unknown> }> = [];
  // A test that failed midway leaves its consumer running: stop it before the connections close under it.
  afterEach(async () => {
    for (const { controller, done } of running.splice(0)) {
      controller.abort();
      await done.catch(() => {});
    }
  });

  async function setUp(label: string) {
    const names = nats.names(label);
    await ensureUsageStream(nats.jsm(), names);
    return { names, publisher: new JetStreamUsagePublisher(nats.nats(), names) };
  }

  /** Starts a consumer on `handle` (the shared connection by default); `stop()` aborts it and returns its result. */
  async function start(names: UsageStreamNames, ledger: FakeLedger, options: Partial<UsageConsumerOptions> & { handle?: NatsHandle } = {}) {
    const handle = options.handle ?? nats.nats();
    const controller = new AbortController();
    options.signal?.addEventListener('abort', () => controller.abort());
    const done = runUsageConsumer({
      js: jetstream(handle.nc),
      jsm: await jetstreamManager(handle.nc),
      stream: names.stream,
      ledger,
      logger: silentLogger,
      retryDelayMs: 100,
      restartDelayMs: 100,
      ...options,
      signal: controller.signal,
    });
    running.push({ controller, done });
    return { done, stop: () => (controller.abort(), done) };
  }

  async function consumerState(names: UsageStreamNames) {
    const info = await nats.jsm().consumers.info(names.stream!, 'usage-ledger');
    return { pending: info.num_pending, ackPending: info.num_ack_pending };
  }

  it('records each event once, counts a second stored copy as a duplicate, and stops when aborted', async () => {
    const { names, publisher } = await setUp('once');
    const events = [testUsageEvent(), testUsageEvent({ clientId: 'client-b' }), testUsageEvent()];
    await publisher.publishBatch(events);
    // A copy past the duplicate window: stored again by the broker, absorbed by the inbox.
    await jetstream(nats.nats().nc).publish(usageSubjectIn(events[0]!.clientId, names.subjectPrefix), encodeUsageEvent(events[0]!));
    const ledger = new FakeLedger();
    const recorded: string[] = [];
    const consumer = await start(names, ledger, { onRecorded: (event, outcome) => recorded.push(`${event.id}:${outcome}`) });
    await ledger.until((l) => l.outcomes.length === 4);
    const stats = await consumer.stop();
    assert.deepEqual(stats, { recorded: 3, duplicates: 1, malformed: 0, failures: 0 });
    assert.deepEqual([...ledger.inbox.keys()].sort(), events.map((event) => event.id).sort());
    assert.deepEqual(ledger.inbox.get(events[1]!.id), events[1]);
    assert.equal(recorded.at(-1), `${events[0]!.id}:duplicate`);
    await waitFor(async () => (await consumerState(names)).ackPending === 0, 5000, 'all acked');
  });

  it('crash between commit and ack: the event comes again to the next run, and the inbox counts it once', async () => {
    const { names, publisher } = await setUp('crash');
    const event = testUsageEvent();
    await publisher.publish(event);
    const ledger = new FakeLedger();
    const crashing = await nats.connect();
    // The transaction committed; the process dies before its ack leaves.
    ledger.afterCommit = async () => {
      ledger.afterCommit = undefined;
      await crashing.nc.close();
    };
    const first = await start(names, ledger, { handle: crashing, ackWaitMs: 1000 });
    await assert.rejects(first.done, UsageConsumerConnectionClosed);
    assert.deepEqual(ledger.outcomes, [{ id: event.id, outcome: 'recorded' }]);

    const second = await start(names, ledger, { ackWaitMs: 1000 });
    await ledger.until((l) => l.outcomes.length === 2);
    const stats = await second.stop();
    assert.deepEqual(ledger.outcomes, [
      { id: event.id, outcome: 'recorded' },
      { id: event.id, outcome: 'duplicate' },
    ]);
    assert.equal(ledger.inbox.size, 1);
    assert.deepEqual(stats, { recorded: 0, duplicates: 1, malformed: 0, failures: 0 });
    await waitFor(async () => (await consumerState(names)).ackPending === 0, 5000, 'redelivery acked');
  });

  it('terminates a malformed message instead of retrying it, and goes on with the next', async () => {
    const { names, publisher } = await setUp('malformed');
    await jetstream(nats.nats().nc).publish(`${names.subjectPrefix}.client-a`, '{"id":"pred_x","rows":"many"}');
    const event = testUsageEvent();
    await publisher.publish(event);
    const ledger = new FakeLedger();
    const consumer = await start(names, ledger, { ackWaitMs: 1000 });
    await ledger.until((l) => l.inbox.has(event.id));
    // Terminated counts as settled: nothing waits for ack_wait to bring it back.
    await waitFor(async () => (await consumerState(names)).ackPending === 0, 5000, 'malformed settled');
    const stats = await consumer.stop();
    assert.deepEqual(stats, { recorded: 1, duplicates: 0, malformed: 1, failures: 0 });
  });

  it('naks while the ledger is down and records the event once it is back', async () => {
    const { names, publisher } = await setUp('ledger-down');
    const ledger = new FakeLedger();
    ledger.down = true;
    const event = testUsageEvent();
    await publisher.publish(event);
    const consumer = await start(names, ledger);
    await ledger.until((l) => l.count('failed') >= 2);
    ledger.down = false;
    await ledger.until((l) => l.inbox.has(event.id));
    const stats = await consumer.stop();
    assert.equal(stats.recorded, 1);
    assert.ok(stats.failures >= 2);
    assert.equal(ledger.count('recorded'), 1);
  });

  it('rides out the broker being cut (refused, then silent) and records what was published meanwhile, without a restart', async () => {
    const { names, publisher } = await setUp('outage');
    const { proxy, url } = await TcpFaultProxy.forUrl(TEST_NATS_URL, 4222);
    try {
      const handle = await nats.connect({ url, reconnectWaitMs: 100, pingIntervalMs: 300, connectTimeoutMs: 1000 });
      const ledger = new FakeLedger();
      // A message the broker sends before it has seen the old connection close (the client gave
      // it up as silent) goes into the black hole and comes again after ack_wait: 2 s here, not
      // the default 30, so that the wait below covers it (seen under load: 15 s were not enough).
      const consumer = await start(names, ledger, { handle, ackWaitMs: 2_000 });
      // Before each cut, the broker has the last ack: one swallowed by the cut would bring its event again (a duplicate the inbox absorbs).
      const acked = () => waitFor(async () => (await consumerState(names)).ackPending === 0, 5000, 'the ack at the broker');
      const before = testUsageEvent();
      await publisher.publish(before);
      await ledger.until((l) => l.inbox.has(before.id));
      await acked();

      for (const fault of ['refuse', 'blackhole'] as const) {
        proxy.set(fault);
        await waitFor(() => !handle.connected(), 5000, `${fault} noticed`);
        const meanwhile = testUsageEvent();
        await publisher.publish(meanwhile);
        proxy.set('up');
        await ledger.until((l) => l.inbox.has(meanwhile.id), 15_000);
        await acked();
      }
      const stats = await consumer.stop();
      assert.deepEqual(stats, { recorded: 3, duplicates: 0, malformed: 0, failures: 0 });
    } finally {
      await proxy.close();
    }
  });

  it('on abort, finishes the event being recorded and hands the ones pulled after it back within a second, not ack_wait', async () => {
    const { names, publisher } = await setUp('abort');
    const events = [1, 2, 3, 4, 5].map(() => testUsageEvent());
    await publisher.publishBatch(events);
    const ledger = new FakeLedger();
    const controller = new AbortController();
    ledger.afterCommit = async () => {
      ledger.afterCommit = undefined;
      controller.abort();
    };
    const first = await start(names, ledger, { signal: controller.signal });
    assert.deepEqual(await first.done, { recorded: 1, duplicates: 0, malformed: 0, failures: 0 });
    // Well inside the 30 s ack_wait: nak'ed, not abandoned.
    const second = await start(names, ledger);
    await ledger.until((l) => l.inbox.size === 5, 5000);
    assert.deepEqual(await second.stop(), { recorded: 4, duplicates: 0, malformed: 0, failures: 0 });
  });

  it('on abort, also hands back what the server sent just before it (still on the wire), not after ack_wait', async () => {
    const { names, publisher } = await setUp('abort-in-flight');
    const { proxy, url } = await TcpFaultProxy.forUrl(TEST_NATS_URL, 4222);
    try {
      const handle = await nats.connect({ url });
      const ledger = new FakeLedger();
      const first = await start(names, ledger, { handle });
      const before = testUsageEvent();
      await publisher.publish(before);
      await ledger.until((l) => l.inbox.has(before.id));
      // The server delivers the next four into the open pull request; the proxy keeps them on the way.
      proxy.set('hold');
      await publisher.publishBatch([1, 2, 3, 4].map(() => testUsageEvent()));
      await waitFor(async () => (await consumerState(names)).ackPending === 4, 5000, 'four messages sent to the consumer');
      const stopped = first.stop();
      proxy.set('up');
      assert.deepEqual(await stopped, { recorded: 1, duplicates: 0, malformed: 0, failures: 0 });
      // Well inside the 30 s ack_wait: handed back, not dropped by a closed subscription.
      const second = await start(names, ledger);
      await ledger.until((l) => l.inbox.size === 5, 5000);
      assert.deepEqual(await second.stop(), { recorded: 4, duplicates: 0, malformed: 0, failures: 0 });
    } finally {
      await proxy.close();
    }
  });

  it('sets its durable consumer up again when it is deleted under it', async () => {
    const { names, publisher } = await setUp('deleted');
    const ledger = new FakeLedger();
    const consumer = await start(names, ledger);
    const first = testUsageEvent();
    await publisher.publish(first);
    await ledger.until((l) => l.inbox.has(first.id));
    await nats.jsm().consumers.delete(names.stream, 'usage-ledger');
    const second = testUsageEvent();
    await publisher.publish(second);
    await ledger.until((l) => l.inbox.has(second.id), 15_000);
    // The new durable starts from the stream's beginning: the first event comes again, as a duplicate.
    await ledger.until((l) => l.count('duplicate') === 1);
    assert.deepEqual(await consumer.stop(), { recorded: 2, duplicates: 1, malformed: 0, failures: 0 });
  });

  /** The real SQLite ledger (in memory) with `recordBatch`, each call's size noted; while `down`, every write fails as a lost database would. */
  function batchingLedger() {
    const inner = SqliteUsageLedger.open(':memory:');
    const state = { down: false, batches: [] as number[] };
    const ledger: Pick<UsageLedger, 'record' | 'recordBatch'> = {
      record: async (event) => {
        if (state.down) throw new Error('ledger database unreachable');
        return inner.record(event);
      },
      recordBatch: async (events) => {
        state.batches.push(events.length);
        if (state.down) throw new Error('ledger database unreachable');
        return inner.recordBatch(events);
      },
    };
    return { inner, ledger, state };
  }

  async function startBatching(names: UsageStreamNames, ledger: Pick<UsageLedger, 'record' | 'recordBatch'>, options: Partial<UsageConsumerOptions> = {}) {
    const controller = new AbortController();
    const done = runUsageConsumer({
      js: jetstream(nats.nats().nc),
      jsm: nats.jsm(),
      stream: names.stream,
      ledger,
      logger: silentLogger,
      retryDelayMs: 100,
      restartDelayMs: 100,
      ...options,
      signal: controller.signal,
    });
    running.push({ controller, done });
    return { done, stop: () => (controller.abort(), done) };
  }

  it('records the messages at hand in one transaction, up to its batch, and acks each only after it', async () => {
    const { names, publisher } = await setUp('batches');
    const events = Array.from({ length: 300 }, (_, index) => testUsageEvent({ clientId: `client-${index % 3}` }));
    for (let from = 0; from < events.length; from += 100) await publisher.publishBatch(events.slice(from, from + 100));
    // A second stored copy of one event (past the duplicate window): absorbed by the inbox.
    await jetstream(nats.nats().nc).publish(usageSubjectIn(events[7]!.clientId, names.subjectPrefix), encodeUsageEvent(events[7]!));
    const { inner, ledger, state } = batchingLedger();
    const acked: string[] = [];
    const consumer = await startBatching(names, ledger, { batch: 64, onRecorded: (event, outcome) => acked.push(`${event.id}:${outcome}`) });
    await waitFor(() => acked.length === 301, 10_000, 'every message recorded');
    await waitFor(async () => (await consumerState(names)).ackPending === 0, 5000, 'all acked');
    assert.deepEqual(await consumer.stop(), { recorded: 300, duplicates: 1, malformed: 0, failures: 0 });
    assert.equal(await inner.eventCount(), 300);
    assert.deepEqual((await inner.report()).map((total) => total.predictions), [100, 100, 100]);
    assert.ok(state.batches.every((size) => size <= 64), `batches of at most 64: ${state.batches.join(',')}`);
    assert.ok(state.batches.length > 0 && state.batches.length < 100, `several events per transaction, not one each: ${state.batches.length} transactions`);
    await inner.close();
  });

  it('records a batch the ledger refuses one message at a time: the event it cannot store is terminated, the others recorded', async () => {
    const { names, publisher } = await setUp('batch-refused');
    const good = [1, 2, 3, 4, 5].map(() => testUsageEvent());
    // Decodes, but has no YYYY-MM-DD day: the ledger refuses it, and with it the whole batch.
    const dayless = testUsageEvent({ occurredAt: '+010000-01-01T00:00:00.000Z' });
    await publisher.publishBatch([...good.slice(0, 2), dayless, ...good.slice(2)]);
    const { inner, ledger, state } = batchingLedger();
    const consumer = await startBatching(names, ledger, { ackWaitMs: 1000 });
    await waitFor(async () => (await inner.eventCount()) === 5, 10_000, 'the five good events recorded');
    await waitFor(async () => (await consumerState(names)).ackPending === 0, 5000, 'all settled');
    assert.deepEqual(await consumer.stop(), { recorded: 5, duplicates: 0, malformed: 1, failures: 0 });
    assert.ok(state.batches.length >= 1);
    await inner.close();
  });

  it('naks a batch while the ledger is down and records it once the ledger is back', async () => {
    const { names, publisher } = await setUp('batch-down');
    const events = [1, 2, 3].map(() => testUsageEvent());
    await publisher.publishBatch(events);
    const { inner, ledger, state } = batchingLedger();
    state.down = true;
    const stats = newUsageConsumerStats();
    const consumer = await startBatching(names, ledger, { stats });
    await waitFor(() => stats.failures >= 3, 10_000, 'failed records');
    state.down = false;
    await waitFor(async () => (await inner.eventCount()) === 3, 10_000, 'recorded once back');
    const final = await consumer.stop();
    assert.equal(final.recorded, 3);
    assert.equal(final.duplicates, 0);
    await inner.close();
  });

  it('survives the broker crashing and starting again: stream and consumer are on its disk, the client reconnects', { skip: !PrivateNatsServer.available() && `needs ${NATS_SERVER_BINARY}` }, async () => {
    const server = await PrivateNatsServer.start();
    let handle: NatsHandle | undefined;
    try {
      handle = await nats.connect({ url: server.url, reconnectWaitMs: 100, connectTimeoutMs: 1000, drainTimeoutMs: 500 });
      const names = uniqueUsageStreamNames('restart');
      await ensureUsageStream(await jetstreamManager(handle.nc), names);
      const publisher = new JetStreamUsagePublisher(handle, { ...names, timeoutMs: 500 });
      const ledger = new FakeLedger();
      const consumer = await start(names, ledger, { handle });
      const before = testUsageEvent();
      await publisher.publish(before);
      await ledger.until((l) => l.inbox.has(before.id));

      await server.stop();
      await assert.rejects(publisher.publish(testUsageEvent()), UsagePublishFailed);
      await server.restart();
      const after = testUsageEvent();
      await waitFor(() => publisher.publish(after).then(() => true, () => false), 10_000, 'publish after the restart');
      await ledger.until((l) => l.inbox.has(after.id), 15_000);
      // Each counted once. The crash may lose the first one's ack (still on its way, or not yet
      // on the broker's disk when it is killed): it then comes again and the inbox absorbs it.
      const stats = await consumer.stop();
      assert.deepEqual({ ...stats, duplicates: 0 }, { recorded: 2, duplicates: 0, malformed: 0, failures: 0 });
      assert.ok(stats.duplicates <= 1, `${stats.duplicates} duplicates: only the event whose ack the crash lost may come again`);
      assert.equal(ledger.count('recorded'), 2);
    } finally {
      await handle?.close();
      await server.close();
    }
  });
});
