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
  ledger: Pick<UsageLedger, 'record'>;
  logger: Logger;
  /** Aborting stops the loop: the message being recorded is finished and acked, the ones pulled after it are nak'ed. */
  signal: AbortSignal;
  /** Messages pulled per request, held by the client until processed. Default 32. */
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
 * The ledger's consumer: for each event, `ledger.record` (one transaction: inbox insert and
 * totals), then the ack. A crash between the two redelivers the event and the inbox answers
 * `duplicate`, so each event counts once. Survives broker restarts (the client reconnects and
 * pulls again; a consumer or stream that went missing is set up again). Resolves with the
 * counters once `signal` aborted and the loop stopped; rejects with UsageConsumerConnectionClosed
 * if the connection was closed under it, or UsageStreamConflict.
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
      const messages = await consumer.consume({ max_messages: options.batch ?? 32, abort_on_missing_resource: true });
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

async function drain(messages: ConsumerMessages, options: UsageConsumerOptions, stats: UsageConsumerStats): Promise<void> {
  const { signal } = options;
  const stop = () => void messages.close();
  signal.addEventListener('abort', stop, { once: true });
  if (signal.aborted) stop();
  try {
    for await (const msg of messages) {
      // Pulled but not started: handed back, so the next run need not wait out ack_wait.
      if (signal.aborted) settle(msg, () => msg.nak(HAND_BACK_DELAY_MS), options.logger);
      else await handle(msg, options, stats);
    }
  } finally {
    signal.removeEventListener('abort', stop);
  }
}

async function handle(msg: JsMsg, options: UsageConsumerOptions, stats: UsageConsumerStats): Promise<void> {
  const { logger } = options;
  const where = { stream: msg.info.stream, seq: msg.seq, subject: msg.subject, deliveries: msg.info.deliveryCount };
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
