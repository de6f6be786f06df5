import { redactUrl } from '@m2m/common';

/**
 * Why a publish did not end in a PubAck. Each one leaves the event's outcome known or not:
 * - `timeout`: no PubAck within the deadline. The event may or may not be stored; publish
 *   it again with the same id (the duplicate window, then the consumer's inbox, absorb a copy).
 * - `no-stream`: no stream listens on the subject, or JetStream is off (the server said
 *   "no responders"): not stored.
 * - `rejected`: the stream answered with an error (wrong stream, limits reached): not stored.
 * - `closed`: the connection is closed or draining: not sent.
 * - `failed`: anything else (the cause says what).
 */
export type PublishFailureReason = 'timeout' | 'no-stream' | 'rejected' | 'closed' | 'failed';

/** A usage event was not acknowledged by JetStream: the relay keeps it unsent and retries later. */
export class UsagePublishFailed extends Error {
  override name = 'UsagePublishFailed';
  constructor(
    readonly eventId: string,
    readonly reason: PublishFailureReason,
    options?: ErrorOptions,
  ) {
    super(`usage event ${eventId} not acknowledged by JetStream (${reason})`, options);
  }
}

/** The first connection attempt failed: refused, unanswered, or not authorized (a reconnect never gives up, a first connect does). */
export class NatsUnavailable extends Error {
  override name = 'NatsUnavailable';
  constructor(url: string, options?: ErrorOptions) {
    super(`could not connect to NATS at ${redactUrl(url)}${options?.cause instanceof Error ? ` (${options.cause.message})` : ''}`, options);
  }
}

/** The stream or the durable consumer exists with a setting that cannot be changed in place (storage, deliver policy…). */
export class UsageStreamConflict extends Error {
  override name = 'UsageStreamConflict';
}

/** The consumer's connection was closed while it was still meant to run (not by its abort signal). */
export class UsageConsumerConnectionClosed extends Error {
  override name = 'UsageConsumerConnectionClosed';
  constructor(options?: ErrorOptions) {
    super('the usage consumer lost its NATS connection for good (closed, not reconnecting)', options);
  }
}
