import { randomUUID } from 'node:crypto';
import { ConfigError } from '@m2m/common';
import { PredictorCallError, QuotaExhaustedError, RetryAfterTooLongError } from '../client/errors.js';
import type { AttemptEvent, PredictorClient } from '../client/predictor-client.js';
import type { Clock } from '../retry/clock.js';
import { ExitCode } from './exit-codes.js';
import { describeFailure } from './failure.js';
import type { BatchLine } from './inputs.js';

/** Exit code of a batch stopped by SIGINT (128 + 2, as shells report it). */
export const INTERRUPTED_EXIT_CODE = 130;

/** A new batch id: what makes the derived idempotency keys of one batch its own. */
export function newBatchId(): string {
  return randomUUID();
}

/** Checks a batch id given with --batch-id or --resume (it becomes part of idempotency keys). */
export function parseBatchId(raw: string): string {
  if (!/^[\w.-]{1,100}$/.test(raw)) throw new ConfigError(`a batch id is 1 to 100 letters, digits, '_', '.' or '-', got "${raw}"`);
  return raw;
}

/**
 * The idempotency key of a line without its own: the batch id and the line number, so
 * that re-running the batch with the same id replays the lines already done.
 */
export function batchLineKey(batchId: string, line: number): string {
  return `${batchId}:${line}`;
}

/** Why a batch stopped before trying every line. */
export type BatchStop = { reason: 'quota-exhausted'; resetsAt: Date } | { reason: 'interrupted' };

export interface BatchSummary {
  batchId: string;
  lines: number;
  ok: number;
  failed: number;
  /** Lines never sent: the batch stopped first (quota, SIGINT). */
  notAttempted: number;
  /** Successful lines whose answer was a replay (`Idempotent-Replayed: true`): done by an earlier run, not executed again. */
  replayed: number;
  attempts: number;
  status429: number;
  tokenRefreshes: number;
  tokenFetches: number;
  /** Per logical prediction, all attempts and waits included (in milliseconds). */
  latencyMs: { p50: number; p95: number; p99: number };
  /** Line numbers of the failed lines, in file order. */
  failedLines: number[];
  /** Failed lines that gave up on rate limiting (429s until the attempts, the budget or the wait cap ran out). */
  rateLimited: number;
  stop: BatchStop | undefined;
  /** 0 when every line succeeded; the stop's code, else the first failure's. */
  exitCode: number;
}

export interface BatchIo {
  /** One JSON result per line, in completion order (lines not attempted last). */
  result: (text: string) => void;
  /** Progress: a redrawn bar on a terminal, plain lines otherwise. */
  progress: (text: string) => void;
  isTty: boolean;
}

export interface BatchDeps {
  client: Pick<PredictorClient, 'predict'>;
  tokenFetches: () => number;
  clock: Clock;
  concurrency: number;
  callOptions: { deadlineMs?: number; maxAttempts?: number };
  /** Makes the idempotency keys of the lines without one (see `batchLineKey`). */
  batchId: string;
  /** Whether the answer for this key was a replay; default: never. */
  wasReplayed?: (idempotencyKey: string) => boolean;
  /** Aborting (SIGINT) starts no further line and cuts the calls in flight short. */
  signal?: AbortSignal;
}

/**
 * Runs the lines with at most `concurrency` in flight. Counts come from the client's
 * attempt events, so they are the caller's own record to compare with the server's.
 * A used-up quota stops the batch at once: no call can succeed before it resets.
 */
export async function runBatch(lines: BatchLine[], deps: BatchDeps, io: BatchIo, events: { subscribe: (listener: (event: AttemptEvent) => void) => void }): Promise<BatchSummary> {
  const counts = { ok: 0, failed: 0, replayed: 0, attempts: 0, status429: 0, tokenRefreshes: 0, rateLimited: 0 };
  events.subscribe((event) => {
    counts.attempts += 1;
    if (event.status === 429) counts.status429 += 1;
    if (event.next === 'refresh-token') counts.tokenRefreshes += 1;
  });
  const stopping = new AbortController();
  const signal = deps.signal ? AbortSignal.any([deps.signal, stopping.signal]) : stopping.signal;
  let stop: BatchStop | undefined;
  const onInterrupt = () => {
    stop ??= { reason: 'interrupted' };
  };
  if (deps.signal?.aborted) onInterrupt();
  deps.signal?.addEventListener('abort', onInterrupt, { once: true });

  const latencies: number[] = [];
  const failedLines: number[] = [];
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
    while (!signal.aborted && next < lines.length) {
      const line = lines[next++]!;
      const idempotencyKey = line.idempotencyKey ?? batchLineKey(deps.batchId, line.line);
      const started = deps.clock.now();
      try {
        const response = await deps.client.predict(line.inputs, { ...deps.callOptions, idempotencyKey, signal });
        counts.ok += 1;
        const replayed = deps.wasReplayed?.(idempotencyKey) ?? false;
        if (replayed) counts.replayed += 1;
        io.result(`${JSON.stringify({ line: line.line, ok: true, ...(replayed ? { replayed } : {}), response })}\n`);
      } catch (error) {
        counts.failed += 1;
        failedLines.push(line.line);
        if (error instanceof QuotaExhaustedError) {
          stop ??= { reason: 'quota-exhausted', resetsAt: error.resetsAt };
          stopping.abort(error);
        } else if (gaveUpOnRateLimit(error)) {
          counts.rateLimited += 1;
        }
        const { code, message } = describeFailure(error);
        firstFailureCode ||= code;
        io.result(`${JSON.stringify({ line: line.line, ok: false, idempotency_key: idempotencyKey, error: message })}\n`);
      }
      latencies.push(deps.clock.now() - started);
      report();
    }
  };
  await Promise.all(Array.from({ length: Math.min(deps.concurrency, lines.length) }, worker));
  deps.signal?.removeEventListener('abort', onInterrupt);

  const notAttempted = lines.slice(next);
  if (notAttempted.length > 0) {
    const why = stop?.reason === 'quota-exhausted' ? `the daily quota is used up until ${stop.resetsAt.toISOString()}` : 'the batch was interrupted';
    for (const line of notAttempted) io.result(`${JSON.stringify({ line: line.line, ok: false, attempted: false, error: `not attempted: ${why}` })}\n`);
  }

  latencies.sort((a, b) => a - b);
  const percentile = (p: number) => (latencies.length === 0 ? 0 : Math.round(latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)]!));
  return {
    batchId: deps.batchId,
    lines: lines.length,
    ok: counts.ok,
    failed: counts.failed,
    notAttempted: notAttempted.length,
    replayed: counts.replayed,
    attempts: counts.attempts,
    status429: counts.status429,
    tokenRefreshes: counts.tokenRefreshes,
    tokenFetches: deps.tokenFetches(),
    latencyMs: { p50: percentile(50), p95: percentile(95), p99: percentile(99) },
    failedLines: failedLines.sort((a, b) => a - b),
    rateLimited: counts.rateLimited,
    stop,
    exitCode: stop?.reason === 'quota-exhausted' ? ExitCode.quotaExhausted : stop?.reason === 'interrupted' ? INTERRUPTED_EXIT_CODE : firstFailureCode,
  };
}

/** The predictor kept answering 429 until the call gave up (attempts, retry budget, or a Retry-After beyond the cap). */
function gaveUpOnRateLimit(error: unknown): boolean {
  return error instanceof PredictorCallError && (error.lastStatus === 429 || error instanceof RetryAfterTooLongError || error.reason === 'budget-exhausted');
}

/**
 * The summary, then what to do about what did not succeed: `resume` is the command
 * line that re-runs this batch (same id), e.g. `caller batch rows.jsonl --resume <id>`.
 */
export function formatSummary(summary: BatchSummary, context: { resume: string; concurrency: number }): string {
  const lines = [
    `summary: ${summary.lines} lines, ok ${summary.ok}, failed ${summary.failed}, not attempted ${summary.notAttempted}, replayed ${summary.replayed}`,
    `attempts ${summary.attempts}, 429s ${summary.status429}, 401 refreshes ${summary.tokenRefreshes}, token fetches ${summary.tokenFetches}`,
    `latency p50 ${summary.latencyMs.p50} ms, p95 ${summary.latencyMs.p95} ms, p99 ${summary.latencyMs.p99} ms`,
  ];
  if (summary.failed === 0 && summary.notAttempted === 0) return lines.join('\n');

  const resume = `${context.resume} (lines already done are replayed, not executed again)`;
  if (summary.stop?.reason === 'quota-exhausted') {
    lines.push(`stopped: the daily quota is used up until ${summary.stop.resetsAt.toISOString()}; ${summary.notAttempted} lines not attempted. After that, resume with: ${resume}`);
  } else if (summary.stop?.reason === 'interrupted') {
    lines.push(`interrupted: ${summary.notAttempted} lines not attempted, ${summary.failed} failed or cut short. Resume with: ${resume}`);
  }
  if (summary.failedLines.length > 0) {
    const shown = summary.failedLines.slice(0, 20).join(', ');
    lines.push(`failed lines: ${shown}${summary.failedLines.length > 20 ? `, … (${summary.failedLines.length} in all; each has "ok": false on stdout)` : ''}`);
  }
  if (summary.rateLimited > 0) {
    lines.push(`${summary.rateLimited} lines gave up on rate limiting (429): lower --concurrency (it was ${context.concurrency}), then resume with: ${resume}`);
  } else if (!summary.stop && summary.failed > 0) {
    lines.push(`to retry the failed lines once their cause is fixed: ${resume}`);
  }
  return lines.join('\n');
}
