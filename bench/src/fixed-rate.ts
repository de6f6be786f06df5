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
  /** A request unanswered this long counts as failed (ms). Default 10 000, as autocannon's. */
  timeoutMs?: number;
  /** Sockets kept open at most; a request due when all are busy waits for one (and its wait counts). */
  maxSockets?: number;
}

export function percentile(sortedAscending: number[], fraction: number): number {
  if (sortedAscending.length === 0) return Number.NaN;
  // The smallest value with at least `fraction` of them at or below it (the epsilon absorbs 0.29 × 100 = 28.999…).
  const rank = Math.ceil(fraction * sortedAscending.length - 1e-9);
  return sortedAscending[Math.min(sortedAscending.length - 1, Math.max(0, rank - 1))]!;
}

export async function fixedRateLoad(options: FixedRateOptions): Promise<FixedRateResult> {
  const total = Math.round(options.rate * options.seconds);
  const agent = new Agent({ keepAlive: true, maxSockets: options.maxSockets ?? 64 });
  const target = new URL(options.url);
  const headers = { ...options.headers, 'content-length': String(Buffer.byteLength(options.body)) };
  const latencies: number[] = [];
  let failed = 0;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const send = () =>
    new Promise<void>((resolve) => {
      const sentAt = performance.now();
      let settled = false;
      // A failed request can report through the request and its response both: count it once.
      const settle = (answered200: boolean) => {
        if (settled) return;
        settled = true;
        if (answered200) latencies.push(performance.now() - sentAt);
        else failed += 1;
        resolve();
      };
      try {
        const requestHeaders = options.perRequestHeaders ? { ...headers, ...options.perRequestHeaders() } : headers;
        // The deadline runs from the send, so a request still waiting for a socket is covered too.
        const signal = AbortSignal.timeout(timeoutMs);
        const outgoing = request({ agent, host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers: requestHeaders, signal }, (incoming) => {
          incoming.resume();
          incoming.once('end', () => settle(incoming.statusCode === 200));
          incoming.once('error', () => settle(false));
        });
        outgoing.once('error', () => settle(false));
        outgoing.end(options.body);
      } catch {
        settle(false);
      }
    });

  const started = performance.now();
  const pending: Promise<void>[] = [];
  const intervalMs = 1000 / options.rate;
  try {
    while (pending.length < total) {
      // Every request whose moment has come: in small batches, as the timer wakes about once a millisecond at best.
      const due = Math.min(total, Math.floor((performance.now() - started) / intervalMs) + 1);
      while (pending.length < due) pending.push(send());
      if (pending.length < total) await new Promise((resolve) => setTimeout(resolve, Math.max(0, started + pending.length * intervalMs - performance.now())));
    }
    await Promise.all(pending);
  } finally {
    agent.destroy();
  }
  latencies.sort((a, b) => a - b);
  return { sent: total, ok: latencies.length, failed, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
}
