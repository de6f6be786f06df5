import { USAGE_EVENT_TYPE, type UsageEvent } from '@m2m/common';
import type { RecordOutcome, UsageLedger } from '../ledger.js';

/**
 * The ledger's `record` semantics over a Map (the inbox): the first record of an id is
 * `recorded`, any later one `duplicate`. While `down`, record throws as a lost database would.
 * `afterCommit` runs after the insert and before record resolves: the place a crash between
 * commit and ack happens.
 */
export class FakeLedger implements Pick<UsageLedger, 'record'> {
  readonly inbox = new Map<string, UsageEvent>();
  readonly outcomes: Array<{ id: string; outcome: RecordOutcome | 'failed' }> = [];
  down = false;
  afterCommit: ((event: UsageEvent) => Promise<void>) | undefined;
  readonly #waiters = new Set<() => void>();

  async record(event: UsageEvent): Promise<RecordOutcome> {
    if (this.down) {
      this.#note(event.id, 'failed');
      throw new Error('ledger database unreachable');
    }
    const outcome = this.inbox.has(event.id) ? 'duplicate' : 'recorded';
    if (outcome === 'recorded') this.inbox.set(event.id, event);
    await this.afterCommit?.(event);
    this.#note(event.id, outcome);
    return outcome;
  }

  /** Resolves once `condition` holds after some record call; rejects after `timeoutMs`. */
  until(condition: (ledger: FakeLedger) => boolean, timeoutMs = 10_000): Promise<void> {
    if (condition(this)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`ledger condition not met within ${timeoutMs} ms; outcomes: ${JSON.stringify(this.outcomes)}`));
      }, timeoutMs);
      const check = () => {
        if (!condition(this)) return;
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve();
      };
      this.#waiters.add(check);
    });
  }

  count(outcome: RecordOutcome | 'failed'): number {
    return this.outcomes.filter((entry) => entry.outcome === outcome).length;
  }

  #note(id: string, outcome: RecordOutcome | 'failed'): void {
    this.outcomes.push({ id, outcome });
    for (const waiter of [...this.#waiters]) waiter();
  }
}

let sequence = 0;

/** A valid usage event with a fresh id. */
export function testUsageEvent(overrides: Partial<UsageEvent> = {}): UsageEvent {
  sequence += 1;
  return {
    id: `pred_test_${process.pid}_${Date.now().toString(36)}_${sequence}`,
    type: USAGE_EVENT_TYPE,
    clientId: 'client-a',
    plan: 'free',
    credential: { method: 'bearer-jwt', id: 'kid-1' },
    rows: 1,
    modelId: 'iris-v1',
    idempotencyKey: undefined,
    occurredAt: '2026-11-28T12:00:00.000Z',
    ...overrides,
  };
}
