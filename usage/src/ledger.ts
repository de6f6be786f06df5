import { checkUsageEvent, MalformedUsageEvent, usageDay, type UsageEvent } from '@m2m/common';

/**
 * The usage ledger: counts each usage event exactly once, however often it is delivered. An
 * inbox keyed by the event id absorbs re-deliveries; per-client, per-UTC-day totals are
 * updated in the same transaction as the inbox insert, and only when that insert took.
 * Implementations: `SqliteUsageLedger` (ledger-sqlite.ts), `PostgresUsageLedger` (ledger-postgres.ts).
 */
export interface UsageLedger {
  /**
   * Records one event in one transaction: `recorded` the first time its id is seen,
   * `duplicate` afterwards (and then nothing changes, even if the rest of the event differs:
   * the first delivery wins). Throws MalformedUsageEvent before writing anything for an event
   * that does not check; resolving means committed, so a consumer acks after it.
   */
  record(event: UsageEvent): Promise<RecordOutcome>;
  /**
   * Records several events in one transaction (one commit instead of one per event), with
   * the outcome of each in input order; an id repeated within the batch is `duplicate` after
   * its first occurrence. All or nothing: one malformed event rejects the batch unwritten.
   */
  recordBatch?(events: readonly UsageEvent[]): Promise<RecordOutcome[]>;
  /** Totals ordered by day, then client id (binary order); throws InvalidUsageFilter for a bad filter. */
  report(filter?: UsageFilter): Promise<UsageTotal[]>;
  /**
   * Events in the inbox (of one client, or all): what scenarios and tests compare with what was
   * published. It counts inbox rows, so it scans; not for a hot path.
   */
  eventCount(clientId?: string): Promise<number>;
  /** True while the ledger's tables can be read; never throws. */
  healthy(): Promise<boolean>;
  /** Idempotent; afterwards every other method rejects with UsageLedgerClosed. */
  close(): Promise<void>;
}

export type RecordOutcome = 'recorded' | 'duplicate';

export interface UsageFilter {
  /** Only this client. */
  clientId?: string;
  /** Only this UTC day, `YYYY-MM-DD`. */
  day?: string;
}

export interface UsageTotal {
  clientId: string;
  /** UTC day, `YYYY-MM-DD`. */
  day: string;
  /** Events (executed predictions) counted. */
  predictions: number;
  /** Input rows predicted, summed over those events. */
  rows: number;
}

/** What the ledger stores of an event. */
export interface LedgerEntry {
  eventId: string;
  clientId: string;
  day: string;
  rows: number;
}

export class UsageLedgerClosed extends Error {
  override name = 'UsageLedgerClosed';
  constructor() {
    super('the usage ledger is closed');
  }
}

/** The database was written by a newer version of the ledger: refuse it rather than misread it. */
export class UnsupportedUsageSchema extends Error {
  override name = 'UnsupportedUsageSchema';
  constructor(
    readonly found: number,
    readonly supported: number,
  ) {
    super(`the usage ledger's schema is version ${found}; this version knows up to ${supported}: upgrade before opening it`);
  }
}

/** A report filter that cannot match anything meaningful (a day that is not `YYYY-MM-DD`, an empty client id). */
export class InvalidUsageFilter extends RangeError {
  override name = 'InvalidUsageFilter';
}

/**
 * A total would exceed 2^53 - 1, past which JavaScript numbers lose precision. The record is
 * rolled back whole (the inbox does not keep the id), so it can be recorded once fixed.
 */
export class UsageTotalOverflow extends Error {
  override name = 'UsageTotalOverflow';
}

const DAY = /^\d{4}-\d{2}-\d{2}$/;

/** True for a real calendar day written `YYYY-MM-DD` (2024-02-30 is not one). */
export function isUsageDay(value: string): boolean {
  if (!DAY.test(value)) return false;
  const time = Date.parse(`${value}T00:00:00.000Z`);
  return !Number.isNaN(time) && new Date(time).toISOString().startsWith(value);
}

/** Checks a filter; throws InvalidUsageFilter naming what is wrong. */
export function checkUsageFilter(filter: UsageFilter = {}): UsageFilter {
  const { clientId, day } = filter;
  if (clientId === '') throw new InvalidUsageFilter('the client id must not be empty');
  if (day !== undefined && !isUsageDay(day)) throw new InvalidUsageFilter(`the day must be a UTC date written YYYY-MM-DD, got ${JSON.stringify(day)}`);
  return { ...(clientId !== undefined ? { clientId } : {}), ...(day !== undefined ? { day } : {}) };
}

/**
 * Checks an event with the decoder every consumer uses (one definition of a valid event) and
 * returns what the ledger stores; throws MalformedUsageEvent. The day comes from the
 * normalized UTC instant, so an offset such as `-05:00` lands on the right UTC day.
 */
export function toLedgerEntry(event: UsageEvent): LedgerEntry {
  const checked = checkUsageEvent(event);
  const day = usageDay(checked);
  // A year outside 0000–9999 serializes as ±YYYYYY and has no YYYY-MM-DD day.
  if (!isUsageDay(day)) throw new MalformedUsageEvent('bad or missing field "occurredAt"');
  return { eventId: checked.id, clientId: checked.clientId, day, rows: checked.rows };
}

/** A batch checked whole before anything is written, each id once. */
export interface PreparedBatch {
  /** The first occurrence of each id, to insert. */
  entries: LedgerEntry[];
  /** Each input event's outcome, given the ids whose inbox insert took. */
  outcomes(inserted: ReadonlySet<string>): RecordOutcome[];
}

/** Throws MalformedUsageEvent for the first event that does not check, so a bad batch writes nothing. */
export function prepareBatch(events: readonly UsageEvent[]): PreparedBatch {
  const checked = events.map(toLedgerEntry);
  const seen = new Set<string>();
  const isFirst = checked.map((entry) => {
    if (seen.has(entry.eventId)) return false;
    seen.add(entry.eventId);
    return true;
  });
  return {
    entries: checked.filter((_, index) => isFirst[index]),
    outcomes: (inserted) => checked.map((entry, index) => (isFirst[index] && inserted.has(entry.eventId) ? 'recorded' : 'duplicate')),
  };
}

/** The largest total a JavaScript number holds exactly; the tables' CHECK constraints use it. */
export const MAX_TOTAL = Number.MAX_SAFE_INTEGER;
