import type { UsageEvent } from '@m2m/common';

/**
 * The transactional outbox of usage events. It lives in the idempotency store's database,
 * because an event must commit in the same transaction as the idempotency record it meters:
 * each store (memory, SQLite, PostgreSQL) implements both.
 */
export interface UsageOutbox {
  /** The event of a request without Idempotency-Key, committed alone. */
  append(event: UsageEvent): Promise<void>;
  /**
   * Hands the oldest unsent events (at most `limit`, in the order they were written) to
   * `deliver`, and marks sent exactly the ids `deliver` returns. In PostgreSQL the rows stay
   * locked (`FOR UPDATE SKIP LOCKED`) until they are marked, so replicas relaying at once take
   * different rows; a relay that dies before marking leaves them unsent, to be delivered again.
   */
  relay(limit: number, deliver: (events: UsageEvent[]) => Promise<ReadonlySet<string>>): Promise<RelayRound>;
  /** Unsent events: how many, and how long the oldest has waited (ms). */
  backlog(): Promise<OutboxBacklog>;
  /** Deletes sent events older than the outbox retention, at most `batchSize`; returns how many. */
  purgeSent(batchSize?: number): Promise<number>;
}

export interface RelayRound {
  /** Events handed to `deliver`. */
  claimed: number;
  /** Events marked sent. */
  delivered: number;
}

export interface OutboxBacklog {
  count: number;
  oldestAgeMs: number | undefined;
}

/** How long sent events are kept before the purge deletes them (ms): one hour, to look at what was relayed recently. */
export const DEFAULT_OUTBOX_RETENTION_MS = 60 * 60 * 1000;
