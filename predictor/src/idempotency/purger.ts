import { setImmediate as yieldToRequests } from 'node:timers/promises';
import type { Logger } from '@m2m/common';
import type { Metrics } from '../http/metrics.js';
import { DEFAULT_PURGE_BATCH_SIZE, type IdempotencyStore } from './store.js';

export interface PurgerOptions {
  store: IdempotencyStore;
  logger: Logger;
  metrics: Metrics;
  /** Time between runs (ms). Default 10 000. */
  intervalMs?: number;
  /** Records deleted per statement: each batch is one short transaction. Default 1 000. */
  batchSize?: number;
}

export interface PurgeRun {
  purged: number;
  batches: number;
  /** Expired records still present when the run ended; undefined for a run cut short by `stop()`. */
  expiredLeft: number | undefined;
  /** Sent usage events deleted from the outbox (past its retention). */
  sentEventsPurged: number;
}

/**
 * Deletes expired idempotency records until none is left, in batches that each hold their
 * locks for one short statement, yielding to requests between batches. A run deletes what
 * expired since the last one whatever the rate, so the table stays within what the retention
 * keeps (a fixed number of rows per run could not keep up with a faster keyed rate).
 */
export class IdempotencyPurger {
  readonly #options: Required<PurgerOptions>;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<PurgeRun> | undefined;
  #stopped = false;

  constructor(options: PurgerOptions) {
    this.#options = { intervalMs: 10_000, batchSize: DEFAULT_PURGE_BATCH_SIZE, ...options };
  }

  start(): void {
    this.#timer = setInterval(() => {
      this.runOnce().catch((error: unknown) =>
        this.#options.logger.warn({ event: 'idempotency.purge_failed', reason: (error as Error).message }, 'purging expired idempotency records failed'),
      );
    }, this.#options.intervalMs);
    this.#timer.unref();
  }

  /** Stops the schedule, and any run under way after its current batch; resolves once it has ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#running?.catch(() => {});
  }

  /** One run; a run still under way is joined, not doubled. */
  runOnce(): Promise<PurgeRun> {
    this.#running ??= this.#run().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async #run(): Promise<PurgeRun> {
    const { store, batchSize, metrics, logger } = this.#options;
    let purged = 0;
    let batches = 0;
    for (;;) {
      const deleted = await store.purgeExpired(batchSize);
      purged += deleted;
      batches += 1;
      metrics.idempotencyPurged.inc(deleted);
      if (deleted < batchSize || this.#stopped) break;
      await yieldToRequests();
    }
    let sentEventsPurged = 0;
    while (!this.#stopped) {
      const deleted = await store.purgeSent(batchSize);
      sentEventsPurged += deleted;
      if (deleted < batchSize) break;
      await yieldToRequests();
    }
    if (this.#stopped) return { purged, batches, expiredLeft: undefined, sentEventsPurged };
    const expiredLeft = await store.countExpired();
    metrics.idempotencyExpired.set(expiredLeft);
    if (purged > 0 || sentEventsPurged > 0) logger.info({ event: 'idempotency.purged', purged, batches, expiredLeft, sentEventsPurged }, 'expired idempotency records and sent usage events purged');
    return { purged, batches, expiredLeft, sentEventsPurged };
  }
}
