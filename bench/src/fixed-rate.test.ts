import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fixedRateLoad, percentile } from './fixed-rate.js';

describe('fixed-rate load (latency at the same load)', () => {
  const bodies: string[] = [];
  const keys: (string | undefined)[] = [];
  let url = '';
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => {
      bodies.push(body);
      keys.push(request.headers['idempotency-key'] as string | undefined);
      response.writeHead(request.headers['x-answer'] === 'refuse' ? 401 : 200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/predict`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('sends rate × seconds requests with the body and headers given, and times the 200s', async () => {
    bodies.length = 0;
    const result = await fixedRateLoad({ url, headers: { 'content-type': 'application/json' }, body: '{"inputs":[]}', rate: 200, seconds: 0.25 });
    assert.equal(result.sent, 50);
    assert.equal(result.ok, 50);
    assert.equal(result.failed, 0);
    assert.ok(result.p50 > 0 && result.p50 <= result.p99);
    assert.deepEqual(new Set(bodies), new Set(['{"inputs":[]}']));
  });

  it('adds the per-request headers to each request', async () => {
    keys.length = 0;
    let next = 0;
    const result = await fixedRateLoad({ url, headers: {}, body: '{}', rate: 100, seconds: 0.05, perRequestHeaders: () => ({ 'idempotency-key': `key-${(next += 1)}` }) });
    assert.equal(result.ok, 5);
    assert.deepEqual([...keys].sort(), ['key-1', 'key-2', 'key-3', 'key-4', 'key-5']);
  });

  it('counts any other answer as failed, not as a latency', async () => {
    const result = await fixedRateLoad({ url, headers: { 'x-answer': 'refuse' }, body: '{}', rate: 100, seconds: 0.1 });
    assert.deepEqual({ sent: result.sent, ok: result.ok, failed: result.failed }, { sent: 10, ok: 0, failed: 10 });
    assert.ok(Number.isNaN(result.p99));
  });

  it('counts a request left unanswered as failed instead of waiting for it forever, including one still waiting for a socket', async () => {
    const silent = createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const result = await fixedRateLoad({ url: `http://127.0.0.1:${(silent.address() as AddressInfo).port}/`, headers: {}, body: '{}', rate: 100, seconds: 0.03, timeoutMs: 50, maxSockets: 1 });
      assert.deepEqual({ sent: result.sent, ok: result.ok, failed: result.failed }, { sent: 3, ok: 0, failed: 3 });
    } finally {
      silent.closeAllConnections();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('takes percentiles by rank', () => {
    const values = Array.from({ length: 100 }, (_, index) => index + 1);
    assert.equal(percentile(values, 0.5), 50);
    assert.equal(percentile(values, 0.99), 99);
    assert.equal(percentile([7], 0.99), 7);
    assert.equal(percentile(values, 0), 1);
    assert.equal(percentile(values, 0.29), 29);
    assert.ok(Number.isNaN(percentile([], 0.5)));
  });
});
