import { Agent, request } from 'node:http';

// Latency at the same load for two servers needs the same arrivals for both: requests sent at
// evenly spaced moments whatever the server does (an open loop). Written by hand because
// autocannon's rate limit releases each connection's quota at the start of every second (a
// burst) and its histogram keeps whole milliseconds, while a request here takes a fraction of one.

export interface FixedRateResult {
  /** Requests sent: rate × seconds. */
  sent: number;
  /** Answered 200. */
  ok: number;
  /** Answered with another status, or failed. */
  failed: number;
  /**
   * From handing each request to the socket pool to its full answer, in ms: a request that waits
   * for a socket counts its wait; a send made late by this process's timer (which wakes once a
   * millisecond at best) does not.
   */
  p50: number;
  p99: number;
}

export interface FixedRateOptions {
  url: string;
  headers: Record<string, string>;
  body: string;
  /** Requests per second. */
  rate: number;
  seconds: number;
  /** Headers of one request beside `headers`, e.g. an Idempotency-Key on a share of them. */
  perRequestHeaders?: () => Record<string, string>;
  /** Sockets kept open at most; a request due when all are busy waits for one (and its wait counts). */
  maxSockets?: number;
}

export function percentile(sortedAscending: number[], fraction: number): number {
  if (sortedAscending.length === 0) return Number.NaN;
  return sortedAscending[Math.min(sortedAscending.length - 1, Math.ceil(fraction * sortedAscending.length) - 1)]!;
}

export async function fixedRateLoad(options: FixedRateOptions): Promise<FixedRateResult> {
  const total = Math.round(options.rate * options.seconds);
  const agent = new Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 64 });
  const target = new URL(options.url);
  const headers = { ...options.headers, 'content-length': String(Buffer.byteLength(options.body)) };
  const latencies: number[] = [];
  let failed = 0;
  const send = () =>
    new Promise<void>((resolve) => {
      const sentAt = performance.now();
      const requestHeaders = options.perRequestHeaders ? { ...headers, ...options.perRequestHeaders() } : headers;
      const outgoing = request({ agent, host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers: requestHeaders }, (incoming) => {
        incoming.resume();
        incoming.once('end', () => {
          if (incoming.statusCode === 200) latencies.push(performance.now() - sentAt);
          else failed += 1;
          resolve();
        });
        incoming.once('error', () => ((failed += 1), resolve()));
      });
      outgoing.once('error', () => ((failed += 1), resolve()));
      outgoing.end(options.body);
    });

  const started = performance.now();
  const pending: Promise<void>[] = [];
  const intervalMs = 1000 / options.rate;
  while (pending.length < total) {
    // Every request whose moment has come.
    const due = Math.min(total, Math.floor((performance.now() - started) / intervalMs) + 1);
    while (pending.length < due) pending.push(send());
    if (pending.length < total) await new Promise((resolve) => setTimeout(resolve, Math.max(0, started + pending.length * intervalMs - performance.now())));
  }
  await Promise.all(pending);
  agent.destroy();
  latencies.sort((a, b) => a - b);
  return { sent: total, ok: latencies.length, failed, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
}
