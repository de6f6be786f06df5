import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLogger, type UsageEvent } from '@m2m/common';
import { createMetrics } from '../http/metrics.js';
import { MemoryIdempotencyStore } from '../idempotency/memory.js';
import { UsageRelay } from './relay.js';
import { usageEventFixture } from '../../../common/src/testing/usage-event-fixture.js';

const event = (id: string): UsageEvent => usageEventFixture(id);

async function until(what: string, condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function setup() {
  const store = new MemoryIdempotencyStore();
  const received: string[] = [];
  const sink = { up: true };
  const lines: Record<string, unknown>[] = [];
  const relay = new UsageRelay({
    outbox: store,
    sink: 'test-sink',
    deliver: async (events) => {
      if (!sink.up) throw new Error('connection refused');
      received.push(...events.map((each) => each.id));
      return new Set(events.map((each) => each.id));
    },
    logger: createLogger('predictor', 'info', { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) }),
    metrics: createMetrics({ collectProcessMetrics: false }),
    batchSize: 3,
    idleMs: 5,
    backoffMs: 5,
    maxBackoffMs: 20,
  });
  return { store, relay, received, sink, lines };
}

describe('UsageRelay', () => {
  it('delivers every event once, in the order written, in batches', async () => {
    const { store, relay, received } = setup();
    for (let index = 0; index < 10; index += 1) await store.append(event(`pred_${index}`));
    relay.start();
    try {
      await until('all ten delivered', () => received.length === 10);
      assert.deepEqual(received, Array.from({ length: 10 }, (_, index) => `pred_${index}`));
      assert.deepEqual(await relay.status(), { sink: 'test-sink', up: true, backlog: 0, oldestAgeSeconds: undefined });
    } finally {
      await relay.stop();
    }
  });

  it('keeps events in the outbox while the sink is down, says so once, and drains them in order when it is back', async () => {
    const { store, relay, received, sink, lines } = setup();
    sink.up = false;
    relay.start();
    try {
      for (let index = 0; index < 5; index += 1) await store.append(event(`pred_${index}`));
      await until('a failed round', () => lines.some((line) => line['event'] === 'usage.relay_failed'));
      const status = await relay.status();
      assert.equal(status.up, false);
      assert.equal(status.backlog, 5);
      sink.up = true;
      await until('the backlog drained', () => received.length === 5);
      assert.deepEqual(received, ['pred_0', 'pred_1', 'pred_2', 'pred_3', 'pred_4']);
      assert.equal(lines.filter((line) => line['event'] === 'usage.relay_failed').length, 1, 'one line per outage, not per round');
      assert.equal(lines.filter((line) => line['event'] === 'usage.relay_resumed').length, 1);
      assert.equal((await relay.status()).backlog, 0);
    } finally {
      await relay.stop();
    }
  });
});
