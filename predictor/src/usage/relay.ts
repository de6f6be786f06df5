import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger, UsageEvent } from '@m2m/common';
import type { Metrics } from '../http/metrics.js';
import type { OutboxBacklog, UsageOutbox } from './outbox.js';

/** Where relayed events go; resolves with the ids it durably accepted (a JetStream ack, a ledger commit). */
export type UsageDelivery = (events: UsageEvent[]) => Promise<ReadonlySet<string>>;

/** What the predictor needs of a relay, whether it runs on this thread (UsageRelay) or on its own (UsageRelayThread). */
export interface UsageRelayControl {
  /** Where the events go (`jetstream`, `in-process`). */
  readonly sink: string;
  start(): void;
  /** Ends the loop after its current round (whose events are then marked, or delivered again later). */
  stop(): Promise<void>;
  /** One round now: tests and the shutdown's last drain. Resolves with the events delivered. */
  relayOnce(): Promise<number>;
  /** For /readyz and /metrics: the backlog and whether the last round reached the sink. */
  status(): Promise<UsageRelayStatus>;
}

export interface UsageRelayStatus {
  sink: string;
  up: boolean;
  backlog: number;
  oldestAgeSeconds: number | undefined;
}

/** The relay's metrics; a relay on another thread forwards them to the registry. */
export type UsageRelayMetrics = Pick<Metrics, 'usageRelayed' | 'usageRelayFailures' | 'usageBacklog' | 'usageOldestAge'>;

export interface UsageRelayOptions {
  outbox: UsageOutbox;
  deliver: UsageDelivery;
  /** `jetstream` or `in-process`, for logs and /readyz. */
  sink: string;
  logger: Logger;
  metrics: UsageRelayMetrics;
  /** Events per round. Default 500. */
  batchSize?: number;
  /** Wait after a round that found less than a batch (ms). Default 200. */
  idleMs?: number;
  /** Wait after a failed round, doubling up to `maxBackoffMs` (ms). Default 250. */
  backoffMs?: number;
  /** Longest wait between failed rounds (ms). Default 5 000. */
  maxBackoffMs?: number;
}

/**
 * Moves usage events from the outbox to their sink, at least once: a round marks sent only
 * what the sink acknowledged, so a crash between the acknowledgement and the mark delivers
 * again, and the consumer's inbox absorbs the repeat. While the sink (or the outbox's
 * database) is down the outbox only grows; predictions do not wait for it.
 */
export class UsageRelay implements UsageRelayControl {
  readonly #options: Required<UsageRelayOptions>;
  readonly #stop = new AbortController();
  #loop: Promise<void> | undefined;
  #sinkUp = true;
  #lastBacklog: OutboxBacklog = { count: 0, oldestAgeMs: undefined };

  constructor(options: UsageRelayOptions) {
    this.#options = { batchSize: 500, idleMs: 200, backoffMs: 250, maxBackoffMs: 5_000, ...options };
  }

  get sink(): string {
    return this.#options.sink;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#loop;
  }

  async relayOnce(): Promise<number> {
    const { delivered } = await this.#options.outbox.relay(this.#options.batchSize, this.#options.deliver);
    this.#options.metrics.usageRelayed.inc(delivered);
    return delivered;
  }

  async status(): Promise<UsageRelayStatus> {
    const backlog = await this.#options.outbox.backlog().catch(() => this.#lastBacklog);
    this.#lastBacklog = backlog;
    this.#recordBacklog(backlog);
    const oldestAgeSeconds = backlog.oldestAgeMs === undefined ? undefined : Math.round(backlog.oldestAgeMs / 1000);
    return { sink: this.#options.sink, up: this.#sinkUp, backlog: backlog.count, oldestAgeSeconds };
  }

  async #run(): Promise<void> {
    const { batchSize, idleMs, backoffMs, maxBackoffMs, logger, metrics, sink } = this.#options;
    const signal = this.#stop.signal;
    let failures = 0;
    while (!signal.aborted) {
      let wait = idleMs;
      try {
        const delivered = await this.relayOnce();
        if (!this.#sinkUp) logger.info({ event: 'usage.relay_resumed', sink }, `usage relay delivering to ${sink} again`);
        this.#sinkUp = true;
        failures = 0;
        if (delivered >= batchSize) wait = 0;
      } catch (error) {
        metrics.usageRelayFailures.inc();
        if (this.#sinkUp) logger.warn({ event: 'usage.relay_failed', sink, reason: (error as Error).message }, `usage relay cannot deliver to ${sink}: events wait in the outbox`);
        this.#sinkUp = false;
        failures += 1;
        wait = Math.min(maxBackoffMs, backoffMs * 2 ** (failures - 1));
      }
      if (wait > 0) await sleep(wait, undefined, { signal }).catch(() => {});
      else await new Promise((resolve) => setImmediate(resolve));
    }
  }

  #recordBacklog(backlog: OutboxBacklog): void {
    this.#options.metrics.usageBacklog.set(backlog.count);
    this.#options.metrics.usageOldestAge.set(backlog.oldestAgeMs === undefined ? 0 : backlog.oldestAgeMs / 1000);
  }
}
