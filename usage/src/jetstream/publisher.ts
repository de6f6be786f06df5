import { encodeUsageEvent, type UsageEvent } from '@m2m/common';
import { jetstream, JetStreamApiError, type JetStreamClient } from '@nats-io/jetstream';
import { errors } from '@nats-io/transport-node';
import type { NatsHandle } from './connection.js';
import { UsagePublishFailed, type PublishFailureReason } from './errors.js';
import { USAGE_STREAM, usageSubjectIn, type UsageStreamNames } from './stream.js';

export interface JetStreamUsagePublisherOptions extends UsageStreamNames {
  /** Deadline for each event's PubAck (ms). Default 5000. */
  timeoutMs?: number;
}

/** What JetStream answered: where the event is stored, and whether that id was already there. */
export interface UsagePubAck {
  stream: string;
  /** Stream sequence of the stored copy (the first one, for a duplicate). */
  seq: number;
  /** The id was already stored within the duplicate window; nothing new was written. */
  duplicate: boolean;
}

export interface PublishBatchResult {
  /** Ids whose PubAck arrived (a duplicate ack included): exactly the rows a relay may mark sent. */
  acknowledged: Set<string>;
  /** The others, each with why; they stay unsent and go again in a later round. */
  failed: Array<{ id: string; error: UsagePublishFailed }>;
}

/**
 * Publishes usage events to JetStream for the outbox relay. Each event carries its id as
 * `Nats-Msg-Id`, and must land in the expected stream (`Nats-Expected-Stream`), so a subject
 * captured by some other stream is an error, not a silent success.
 */
export class JetStreamUsagePublisher {
  readonly #nats: Pick<NatsHandle, 'nc' | 'connected'>;
  readonly #js: JetStreamClient;
  readonly #stream: string;
  readonly #subjectPrefix: string | undefined;
  readonly #timeoutMs: number;
  #lastFailed = false;

  constructor(nats: Pick<NatsHandle, 'nc' | 'connected'>, options: JetStreamUsagePublisherOptions = {}) {
    this.#nats = nats;
    this.#js = jetstream(nats.nc);
    this.#stream = options.stream ?? USAGE_STREAM;
    this.#subjectPrefix = options.subjectPrefix;
    this.#timeoutMs = options.timeoutMs ?? 5000;
  }

  /**
   * Resolves once JetStream has stored the event, or had already stored that id within its
   * duplicate window (`duplicate: true`: as good, the first copy stands). Rejects with
   * UsagePublishFailed otherwise, at the latest after `timeoutMs`.
   */
  async publish(event: UsageEvent): Promise<UsagePubAck> {
    try {
      const { stream, seq, duplicate } = await this.#js.publish(usageSubjectIn(event.clientId, this.#subjectPrefix), encodeUsageEvent(event), {
        msgID: event.id,
        expect: { streamName: this.#stream },
        timeout: this.#timeoutMs,
      });
      this.#lastFailed = false;
      return { stream, seq, duplicate };
    } catch (error) {
      this.#lastFailed = true;
      throw new UsagePublishFailed(event.id, failureReason(error), { cause: error });
    }
  }

  /**
   * Publishes all events at once (not one after another) and waits for every answer. The acks
   * come back in any order, and JetStream's order of storing need not be the order given: the
   * ledger counts, it does not depend on order.
   */
  async publishBatch(events: readonly UsageEvent[]): Promise<PublishBatchResult> {
    const results = await Promise.allSettled(events.map((event) => this.publish(event)));
    const outcome: PublishBatchResult = { acknowledged: new Set(), failed: [] };
    results.forEach((result, index) => {
      const id = events[index]!.id;
      if (result.status === 'fulfilled') outcome.acknowledged.add(id);
      else outcome.failed.push({ id, error: result.reason as UsagePublishFailed });
    });
    // A repeated id may have one copy acked and one not: it is stored, so it counts as acknowledged.
    outcome.failed = outcome.failed.filter(({ id }) => !outcome.acknowledged.has(id));
    return outcome;
  }

  /** Connected, and the latest publish (if any) was acknowledged. */
  healthy(): boolean {
    return this.#nats.connected() && !this.#lastFailed;
  }
}

function failureReason(error: unknown): PublishFailureReason {
  if (error instanceof errors.TimeoutError) return 'timeout';
  // The client reports the server's "no responders" (no stream on the subject) as a JetStreamNotEnabled it does not export.
  if (error instanceof Error && error.cause instanceof errors.RequestError && error.cause.isNoResponders()) return 'no-stream';
  if (error instanceof JetStreamApiError) return 'rejected';
  if (error instanceof errors.ClosedConnectionError || error instanceof errors.DrainingConnectionError) return 'closed';
  return 'failed';
}
