import { decodeUsageEvent, MalformedUsageEvent, type Logger, type UsageEvent } from '@m2m/common';
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type ConsumerInfo,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { errors, nanos } from '@nats-io/transport-node';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RecordOutcome, UsageLedger } from '../ledger.js';
import { UsageConsumerConnectionClosed, UsageStreamConflict } from './errors.js';
import { USAGE_CONSUMER_DURABLE, USAGE_STREAM } from './stream.js';

export interface UsageConsumerConfig {
  /** Stream to read. Default `USAGE`. */
  stream?: string;
  /** Durable consumer name: where the server keeps this reader's position. Default `usage-ledger`. */
  durable?: string;
  /**
   * How long the server waits for an ack before delivering a message again (ms). Default
   * 30_000. Longer than a ledger transaction ever takes; a redelivery after a slow commit is
   * absorbed by the inbox anyway. Messages are also redelivered without end (`max_deliver` -1):
   * an event is never given up because the ledger was down.
   */
  ackWaitMs?: number;
}

export interface UsageConsumerStats {
  /** Events the ledger counted for the first time. */
  recorded: number;
  /** Events the ledger had already counted (a redelivery or a second copy): acked, not counted. */
  duplicates: number;
  /** Messages that do not decode: terminated, never redelivered. */
  malformed: number;
  /** Ledger failures: each message nak'ed for a later redelivery. */
  failures: number;
}

export interface UsageConsumerOptions extends UsageConsumerConfig {
  js: JetStreamClient;
  jsm: JetStreamManager;
  /**
   * Where events are recorded. With `recordBatch`, the messages already pulled are recorded in
   * one transaction and then acked (one commit for up to `batch` events instead of one each:
   * on PostgreSQL a commit waits for its WAL flush, about 2 ms here); without it, one by one.
   */
  ledger: Pick<UsageLedger, 'record' | 'recordBatch'>;
  logger: Logger;
  /** Aborting stops the loop: the messages being recorded are finished and acked, the ones pulled after them are nak'ed. */
  signal: AbortSignal;
  /**
   * Messages pulled per request, held by the client until processed; also the most recorded in
   * one transaction. Default 128 (DEFAULT_CONSUMER_BATCH).
   */
  batch?: number;
  /** Nak delay after the first ledger failure of a message (ms), doubled per redelivery. Default 1000. */
  retryDelayMs?: number;
  /** Upper bound of that delay (ms). Default 60_000. */
  maxRetryDelayMs?: number;
  /** Pause before setting the consumer up again after it failed or went missing (ms). Default 1000. */
  restartDelayMs?: number;
  /** Called after each ack, for metrics. */
  onRecorded?: (event: UsageEvent, outcome: RecordOutcome) => void;
  /** Counters to update in place (a metrics endpoint reads them while the loop runs). Default: fresh ones. */
  stats?: UsageConsumerStats;
}

/**
 * Messages pulled and recorded at once. A PostgreSQL commit waits for its WAL flush (about 2 ms
 * on the bench machine), so the batch sets the ceiling: with 32 the JetStream path carried about
 * 3 800 events/s end to end, with 128 about 5 000 (docs/benchmark.md).
 */
export const DEFAULT_CONSUMER_BATCH = 128;

export function newUsageConsumerStats(): UsageConsumerStats {
  return { recorded: 0, duplicates: 0, malformed: 0, failures: 0 };
}

/**
 * Creates the durable pull consumer or brings it to this configuration; several processes
 * may run it at once. Throws UsageStreamConflict for a setting the server cannot change in place.
 */
export async function ensureUsageConsumer(jsm: JetStreamManager, config: UsageConsumerConfig = {}): Promise<ConsumerInfo> {
  const { stream = USAGE_STREAM, durable = USAGE_CONSUMER_DURABLE } = config;
  try {
    // On nats-server 2.9 a create with changed updatable settings (ack_wait…) updates the consumer.
    return await jsm.consumers.add(stream, {
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(config.ackWaitMs ?? 30_000),
      max_deliver: -1,
      deliver_policy: DeliverPolicy.All,
    });
  } catch (error) {
    if (error instanceof JetStreamApiError && error.code !== JetStreamApiCodes.StreamNotFound) {
      throw new UsageStreamConflict(`consumer ${durable} on ${stream} cannot take this configuration: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

/**
 * The ledger's consumer: the messages at hand (those already pulled, up to `batch`) go to
 * `ledger.recordBatch` (one transaction: inbox inserts and totals), then each is acked; a batch
 * the ledger refuses is recorded again one message at a time, so one bad event neither holds
 * the others back nor hides which one it was. A crash between commit and ack redelivers the
 * events and the inbox answers `duplicate`, so each event counts once. Survives broker
 * restarts (the client reconnects and pulls again; a consumer or stream that went missing is
 * set up again). Resolves with the counters once `signal` aborted and the loop stopped;
 * rejects with UsageConsumerConnectionClosed if the connection was closed under it, or
 * UsageStreamConflict.
 */
export async function runUsageConsumer(options: UsageConsumerOptions): Promise<UsageConsumerStats> {
  const { js, jsm, logger, signal, stream = USAGE_STREAM, durable = USAGE_CONSUMER_DURABLE } = options;
  const stats = options.stats ?? newUsageConsumerStats();
  const restartDelayMs = options.restartDelayMs ?? 1000;
  while (!signal.aborted) {
    try {
      await ensureUsageConsumer(jsm, options);
      const consumer = await js.consumers.get(stream, durable);
      // abort_on_missing_resource: a consumer deleted under us ends the iterator, and the next round recreates it.
      const messages = await consumer.consume({ max_messages: options.batch ?? DEFAULT_CONSUMER_BATCH, abort_on_missing_resource: true });
      logger.info({ stream, durable }, 'usage consumer pulling');
      await drain(messages, options, stats);
    } catch (error) {
      if (error instanceof UsageStreamConflict) throw error;
      if (error instanceof errors.ClosedConnectionError || error instanceof errors.DrainingConnectionError) {
        if (signal.aborted) break;
        throw new UsageConsumerConnectionClosed({ cause: error });
      }
      logger.warn({ stream, durable, err: (error as Error).message }, 'usage consumer interrupted; setting it up again');
    }
    await sleep(restartDelayMs, undefined, { signal }).catch(() => {});
  }
  logger.info({ stream, durable, ...stats }, 'usage consumer stopped');
  return stats;
}

/**
 * Why not 0: on nats-server 2.9.10 an immediate nak right after the pull subscription closed is
 * redelivered into the closed pull request (the message then waits out ack_wait, and another one
 * came twice); a delayed redelivery goes to the next live request. Seen with 500 ms and more.
 */
const HAND_BACK_DELAY_MS = 1000;

/**
 * After an abort the pull subscription stays open until nothing arrived for HAND_BACK_QUIET_MS
 * (at most HAND_BACK_MAX_MS), and what arrives is nak'ed: a message the server sent just before
 * the close would otherwise be dropped by the client and wait out ack_wait (30 s). Both are
 * below HAND_BACK_DELAY_MS, so a message handed back is not redelivered to this subscription.
 */
const HAND_BACK_QUIET_MS = 100;
const HAND_BACK_MAX_MS = 500;

async function drain(messages: ConsumerMessages, options: UsageConsumerOptions, stats: UsageConsumerStats): Promise<void> {
  const { signal } = options;
  let quiet: NodeJS.Timeout | undefined;
  let deadline: NodeJS.Timeout | undefined;
  const close = () => {
    clearTimeout(quiet);
    clearTimeout(deadline);
    void messages.close();
  };
  /** Called on abort and on each message that arrives after it. */
  const closeWhenQuiet = () => {
    clearTimeout(quiet);
    quiet = setTimeout(close, HAND_BACK_QUIET_MS);
    deadline ??= setTimeout(close, HAND_BACK_MAX_MS);
  };
  signal.addEventListener('abort', closeWhenQuiet, { once: true });
  if (signal.aborted) closeWhenQuiet();
  const most = options.batch ?? DEFAULT_CONSUMER_BATCH;
  const pulled = messages[Symbol.asyncIterator]();
  // One next() always outstanding, so the client sends its queued pull requests while a batch
  // is recorded. Not `getPending()` to gather a batch: it counts the pull requests the iterator
  // already sent (nats.js 3.4), so a read it promised can wait until the pull expires (30 s).
  // The catch marks each next() handled: one that rejects (the consumer deleted) while a batch
  // is recorded is awaited, and so thrown, only afterwards.
  const advance = () => {
    const promise = pulled.next();
    promise.catch(() => {});
    return promise;
  };
  let next = advance();
  try {
    for (;;) {
      const first = await next;
      if (first.done) break;
      next = advance();
      const batch = [first.value];
      // What the client already holds comes before the next turn of the event loop; nothing waits for more.
      while (batch.length < most) {
        const more = await Promise.race([next, nextTurn()]);
        if (more === undefined || more.done) break;
        batch.push(more.value);
        next = advance();
      }
      // Pulled but not started: handed back, so the next run need not wait out ack_wait.
      if (signal.aborted) {
        batch.forEach((msg) => settle(msg, () => msg.nak(HAND_BACK_DELAY_MS), options.logger));
        closeWhenQuiet();
      } else if (options.ledger.recordBatch && batch.length > 1) await handleBatch(batch, options, stats);
      else {
        for (const msg of batch) {
          if (signal.aborted) settle(msg, () => msg.nak(HAND_BACK_DELAY_MS), options.logger);
          else await handle(msg, options, stats);
        }
      }
    }
  } catch (error) {
    // The outstanding next() ends with the iterator; a message it took comes again after ack_wait.
    close();
    throw error;
  } finally {
    clearTimeout(quiet);
    clearTimeout(deadline);
    signal.removeEventListener('abort', closeWhenQuiet);
  }
}

/** Resolves with undefined on the next turn of the event loop, after every microtask queued now. */
function nextTurn(): Promise<undefined> {
  return new Promise((resolve) => setImmediate(() => resolve(undefined)));
}

/** One transaction for the batch, then the acks; malformed messages are terminated first. A refused batch goes again one by one. */
async function handleBatch(batch: JsMsg[], options: UsageConsumerOptions, stats: UsageConsumerStats): Promise<void> {
  const { logger } = options;
  const decoded: Array<{ msg: JsMsg; event: UsageEvent }> = [];
  for (const msg of batch) {
    try {
      decoded.push({ msg, event: decodeUsageEvent(msg.data) });
    } catch (error) {
      terminate(msg, error as Error, stats, logger, whereOf(msg));
    }
  }
  if (decoded.length === 0) return;
  let outcomes: RecordOutcome[];
  try {
    outcomes = await options.ledger.recordBatch!(decoded.map(({ event }) => event));
  } catch (error) {
    logger.debug({ messages: decoded.length, err: (error as Error).message }, 'usage batch not recorded; recording its events one by one');
    for (const { msg } of decoded) await handle(msg, options, stats);
    return;
  }
  decoded.forEach(({ msg, event }, index) => {
    const outcome = outcomes[index]!;
    settle(msg, () => msg.ack(), logger);
    if (outcome === 'recorded') stats.recorded += 1;
    else stats.duplicates += 1;
    logger.debug({ ...whereOf(msg), eventId: event.id, outcome }, 'usage event recorded');
    options.onRecorded?.(event, outcome);
  });
}

function whereOf(msg: JsMsg): object {
  return { stream: msg.info.stream, seq: msg.seq, subject: msg.subject, deliveries: msg.info.deliveryCount };
}

async function handle(msg: JsMsg, options: UsageConsumerOptions, stats: UsageConsumerStats): Promise<void> {
  const { logger } = options;
  const where = whereOf(msg);
  let event: UsageEvent;
  try {
    event = decodeUsageEvent(msg.data);
  } catch (error) {
    return terminate(msg, error as Error, stats, logger, where);
  }
  let outcome: RecordOutcome;
  try {
    outcome = await options.ledger.record(event);
  } catch (error) {
    if (error instanceof MalformedUsageEvent) return terminate(msg, error, stats, logger, where);
    stats.failures += 1;
    const delayMs = Math.min((options.retryDelayMs ?? 1000) * 2 ** (msg.info.deliveryCount - 1), options.maxRetryDelayMs ?? 60_000);
    logger.warn({ ...where, eventId: event.id, delayMs, err: (error as Error).message }, 'usage event not recorded; redelivery later');
    return settle(msg, () => msg.nak(delayMs), logger);
  }
  settle(msg, () => msg.ack(), logger);
  if (outcome === 'recorded') stats.recorded += 1;
  else stats.duplicates += 1;
  logger.debug({ ...where, eventId: event.id, outcome }, 'usage event recorded');
  options.onRecorded?.(event, outcome);
}

function terminate(msg: JsMsg, error: Error, stats: UsageConsumerStats, logger: Logger, where: object): void {
  stats.malformed += 1;
  logger.warn({ ...where, err: error.message }, 'malformed usage event terminated');
  settle(msg, () => msg.term(), logger);
}

/** An ack that cannot be sent (connection closed) is not an error here: the message comes again and the inbox absorbs it. */
function settle(msg: JsMsg, send: () => void, logger: Logger): void {
  try {
    send();
  } catch (error) {
    logger.warn({ seq: msg.seq, err: (error as Error).message }, 'usage event not settled; it will be redelivered');
  }
}
