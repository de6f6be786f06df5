import { Worker } from 'node:worker_threads';
import type { Logger, LogLevel } from '@m2m/common';
import type { UsageOutbox } from './outbox.js';
import type { UsageRelayControl, UsageRelayMetrics, UsageRelayOptions, UsageRelayStatus } from './relay.js';

export interface RelayWorkerData {
  /** The idempotency store's SQLite file, whose usage_outbox the thread relays. */
  outboxPath: string;
  /** The ledger's SQLite file. */
  ledgerPath: string;
  logLevel: LogLevel;
  relay?: Pick<UsageRelayOptions, 'batchSize' | 'idleMs' | 'backoffMs' | 'maxBackoffMs'>;
}

export type RelayThreadCall = 'start' | 'relayOnce' | 'status' | 'stop';

export type RelayThreadMessage =
  | { type: 'ready' }
  | { type: 'failed'; reason: string }
  | { type: 'reply'; id: number; result?: unknown; error?: string }
  | { type: 'metric'; name: keyof UsageRelayMetrics; op: 'inc' | 'set'; value: number };

export interface UsageRelayThreadOptions extends RelayWorkerData {
  /** The worker's module: relay-worker.ts under tsx, its bundle (`dist/predictor-usage-relay.js`) in the images. */
  entry: URL;
  /** The same outbox on this thread: its backlog while the thread is down. */
  outbox: UsageOutbox;
  logger: Logger;
  metrics: UsageRelayMetrics;
  /** First wait before a thread that died is started again, doubling up to 30 s (ms). Default 1 000. */
  restartDelayMs?: number;
  /** Told when a thread died unasked (false) and when a new one runs (true): what the thread did for this one, this one does meanwhile. */
  onRunning?: (running: boolean) => void;
}

const MAX_RESTART_DELAY_MS = 30_000;

/** The relay thread could not open its databases. */
export class UsageRelayThreadFailed extends Error {
  override name = 'UsageRelayThreadFailed';
}

/**
 * The embedded default's relay (SQLite outbox → SQLite ledger) on a worker thread. Each
 * event's relay is synchronous SQLite work (read it, record it in the ledger, mark it sent:
 * about 17 µs): on the request thread, beside requests of about 140 µs, it cost B on SQLite a
 * quarter of its throughput. The thread has its own connections; SQLite's WAL lets it read
 * the outbox while requests write, and its short writes (the ledger is another file; marking
 * sent is one transaction a round) wait on the write lock like any other connection's.
 */
export class UsageRelayThread implements UsageRelayControl {
  readonly sink = 'in-process';
  readonly #options: UsageRelayThreadOptions;
  readonly #pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  #worker: Worker | undefined;
  #nextId = 0;
  #started = false;
  #stopping = false;
  #restarts = 0;
  #restartTimer: NodeJS.Timeout | undefined;

  private constructor(options: UsageRelayThreadOptions, worker: Worker) {
    this.#options = options;
    this.#attach(worker);
  }

  /** Starts the thread and resolves once it has opened both databases: a thread that cannot is a start-up error. */
  static async start(options: UsageRelayThreadOptions): Promise<UsageRelayThread> {
    return new UsageRelayThread(options, await startWorker(options));
  }

  start(): void {
    this.#started = true;
    void this.#call('start').catch(() => {});
  }

  async relayOnce(): Promise<number> {
    return (await this.#call('relayOnce')) as number;
  }

  async status(): Promise<UsageRelayStatus> {
    if (this.#worker) return (await this.#call('status')) as UsageRelayStatus;
    const backlog = await this.#options.outbox.backlog();
    return { sink: this.sink, up: false, backlog: backlog.count, oldestAgeSeconds: backlog.oldestAgeMs === undefined ? undefined : Math.round(backlog.oldestAgeMs / 1000) };
  }

  /** Ends the thread's loop after its current round, closes its databases, then the thread. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    const worker = this.#worker;
    if (!worker) return;
    await this.#call('stop').catch(() => {});
    await worker.terminate();
  }

  #attach(worker: Worker): void {
    this.#worker = worker;
    worker.on('message', (message: RelayThreadMessage) => this.#receive(message));
    worker.on('error', (error) => this.#lost(worker, error));
    worker.on('exit', (code) => this.#lost(worker, new Error(`exited with code ${code}`)));
  }

  #call(call: RelayThreadCall): Promise<unknown> {
    const worker = this.#worker;
    if (!worker) return Promise.reject(new Error('the usage relay thread is not running'));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      worker.postMessage({ id, call });
    });
  }

  #receive(message: RelayThreadMessage): void {
    if (message.type === 'metric') {
      const metric = this.#options.metrics[message.name] as { inc(value: number): void; set(value: number): void };
      if (message.op === 'inc') metric.inc(message.value);
      else metric.set(message.value);
    } else if (message.type === 'reply') {
      const pending = this.#pending.get(message.id);
      this.#pending.delete(message.id);
      if (message.error === undefined) pending?.resolve(message.result);
      else pending?.reject(new Error(message.error));
    }
  }

  /**
   * A thread that died unasked: its events wait in the outbox (/readyz shows the backlog and
   * `up: false`), requests go on, and a new thread starts after a growing delay.
   */
  #lost(worker: Worker, error: Error): void {
    if (this.#worker !== worker) return;
    this.#worker = undefined;
    for (const { reject } of this.#pending.values()) reject(error);
    this.#pending.clear();
    if (this.#stopping) return;
    this.#options.onRunning?.(false);
    const delayMs = Math.min(MAX_RESTART_DELAY_MS, (this.#options.restartDelayMs ?? 1_000) * 2 ** this.#restarts);
    this.#restarts += 1;
    this.#options.logger.error({ event: 'usage.relay_thread_failed', reason: error.message, restartInMs: delayMs }, 'the usage relay thread stopped: events wait in the outbox');
    this.#restartTimer = setTimeout(() => void this.#restart(), delayMs);
    this.#restartTimer.unref();
  }

  async #restart(): Promise<void> {
    let worker: Worker;
    try {
      worker = await startWorker(this.#options);
    } catch (error) {
      // Counts as another loss: the next try waits longer.
      const placeholder = { terminate: async () => 0 } as unknown as Worker;
      this.#worker = placeholder;
      this.#lost(placeholder, error as Error);
      return;
    }
    if (this.#stopping) {
      await worker.terminate();
      return;
    }
    this.#options.logger.info({ event: 'usage.relay_thread_restarted' }, 'the usage relay thread runs again');
    this.#attach(worker);
    this.#options.onRunning?.(true);
    if (this.#started) this.start();
  }
}

/** A relay thread that has opened its databases (its first message says so). */
async function startWorker(options: UsageRelayThreadOptions): Promise<Worker> {
  const { outboxPath, ledgerPath, logLevel, relay } = options;
  const worker = spawn(options.entry, { outboxPath, ledgerPath, logLevel, ...(relay && { relay }) });
  const first = await new Promise<RelayThreadMessage>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new UsageRelayThreadFailed(`the usage relay thread exited at start (code ${code})`)));
  }).catch(async (error: Error) => {
    await worker.terminate();
    throw error instanceof UsageRelayThreadFailed ? error : new UsageRelayThreadFailed(`the usage relay thread cannot start: ${error.message}`);
  });
  if (first.type !== 'ready') {
    await worker.terminate();
    throw new UsageRelayThreadFailed(`the usage relay thread cannot start: ${first.type === 'failed' ? first.reason : first.type}`);
  }
  return worker;
}

/**
 * A worker thread running `entry`. Under tsx (development, tests) the entry is TypeScript and
 * a worker does not inherit tsx's loader, so it is registered first; the images run bundles.
 */
function spawn(entry: URL, workerData: RelayWorkerData): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, { workerData });
  const tsx = import.meta.resolve('tsx/esm/api');
  return new Worker(`import { register } from ${JSON.stringify(tsx)}; register(); await import(${JSON.stringify(entry.href)});`, { eval: true, workerData });
}
