import type { AttemptEvent, PredictorClient } from '../client/predictor-client.js';
import type { Clock } from '../retry/clock.js';
import { describeFailure } from './failure.js';
import type { BatchLine } from './inputs.js';

export interface BatchSummary {
  lines: number;
  ok: number;
  failed: number;
  attempts: number;
  status429: number;
  tokenRefreshes: number;
  tokenFetches: number;
  /** Per logical prediction, all attempts and waits included (in milliseconds). */
  latencyMs: { p50: number; p95: number; p99: number };
  /** Exit code of the first failure, 0 when every line succeeded. */
  exitCode: number;
}

export interface BatchIo {
  /** One JSON result per line, in completion order. */
  result: (text: string) => void;
  /** Progress: a redrawn bar on a terminal, plain lines otherwise. */
  progress: (text: string) => void;
  isTty: boolean;
}

/**
 * Runs the lines with at most `concurrency` in flight. Counts come from the client's
 * attempt events, so they are the caller's own record to compare with the server's.
 */
export async function runBatch(
  lines: BatchLine[],
  deps: { client: PredictorClient; tokenFetches: () => number; clock: Clock; concurrency: number; callOptions: { deadlineMs?: number; maxAttempts?: number } },
  io: BatchIo,
  events: { subscribe: (listener: (event: AttemptEvent) => void) => void },
): Promise<BatchSummary> {
  const counts = { ok: 0, failed: 0, attempts: 0, status429: 0, tokenRefreshes: 0 };
  events.subscribe((event) => {
    counts.attempts += 1;
    if (event.status === 429) counts.status429 += 1;
    if (event.next === 'refresh-token') counts.tokenRefreshes += 1;
  });
  const latencies: number[] = [];
  let firstFailureCode = 0;
  let next = 0;
  const step = Math.max(1, Math.ceil(lines.length / 10));
  const report = () => {
    const done = counts.ok + counts.failed;
    if (io.isTty) {
      const width = 30;
      const filled = Math.round((done / Math.max(1, lines.length)) * width);
      io.progress(`\r[${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${done}/${lines.length}  ok ${counts.ok}  failed ${counts.failed}  429s ${counts.status429}${done === lines.length ? '\n' : ''}`);
    } else if (done % step === 0 || done === lines.length) {
      io.progress(`progress ${done}/${lines.length} ok ${counts.ok} failed ${counts.failed} 429s ${counts.status429}\n`);
    }
  };

  const worker = async () => {
    for (let index = next++; index < lines.length; index = next++) {
      const line = lines[index]!;
      const started = deps.clock.now();
      try {
        const response = await deps.client.predict(line.inputs, { ...deps.callOptions, ...(line.idempotencyKey ? { idempotencyKey: line.idempotencyKey } : {}) });
        counts.ok += 1;
        io.result(`${JSON.stringify({ line: line.line, ok: true, response })}\n`);
      } catch (error) {
        counts.failed += 1;
        const { code, message } = describeFailure(error);
        firstFailureCode ||= code;
        io.result(`${JSON.stringify({ line: line.line, ok: false, error: message })}\n`);
      }
      latencies.push(deps.clock.now() - started);
      report();
    }
  };
  await Promise.all(Array.from({ length: Math.min(deps.concurrency, lines.length) }, worker));

  latencies.sort((a, b) => a - b);
  const percentile = (p: number) => (latencies.length === 0 ? 0 : Math.round(latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)]!));
  return {
    lines: lines.length,
    ...counts,
    tokenFetches: deps.tokenFetches(),
    latencyMs: { p50: percentile(50), p95: percentile(95), p99: percentile(99) },
    exitCode: firstFailureCode,
  };
}

export function formatSummary(summary: BatchSummary): string {
  return [
    `summary: ${summary.lines} lines, ok ${summary.ok}, failed ${summary.failed}`,
    `attempts ${summary.attempts}, 429s ${summary.status429}, 401 refreshes ${summary.tokenRefreshes}, token fetches ${summary.tokenFetches}`,
    `latency p50 ${summary.latencyMs.p50} ms, p95 ${summary.latencyMs.p95} ms, p99 ${summary.latencyMs.p99} ms`,
  ].join('\n');
}
