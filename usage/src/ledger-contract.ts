import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { MalformedUsageEvent, USAGE_EVENT_TYPE, type UsageEvent } from '@m2m/common';
import { InvalidUsageFilter, MAX_TOTAL, UnsupportedUsageSchema, UsageLedgerClosed, UsageTotalOverflow, type UsageLedger } from './ledger.js';

/**
 * The behaviour every `UsageLedger` must show, registered as `node:test` tests for one
 * implementation: `ledger-sqlite.test.ts` and `ledger-postgres.test.ts` run it.
 */

/** Where a ledger lives (a file, a schema) and how to open it; opening the same place again reopens the same ledger. */
export interface LedgerFixture {
  /** A new, empty place. */
  newPlace(): string;
  open(place: string): Promise<UsageLedger>;
  /** Makes the ledger at `place` look written by a newer version of its schema. */
  markNewerSchema(place: string): Promise<void>;
}

let sequence = 0;

/** A valid event; every call gets a new id unless `id` is given. */
export function usageEvent(overrides: Partial<UsageEvent> = {}): UsageEvent {
  sequence += 1;
  return {
    id: `pred_${sequence.toString().padStart(6, '0')}`,
    type: USAGE_EVENT_TYPE,
    clientId: 'client-a',
    plan: 'standard',
    credential: { method: 'bearer-jwt', id: 'kid-1' },
    rows: 1,
    modelId: 'iris-softmax@1',
    idempotencyKey: undefined,
    occurredAt: '2024-03-01T12:00:00.000Z',
    ...overrides,
  };
}

export function describeUsageLedgerContract(name: string, fixture: LedgerFixture, options: { skip?: string | false } = {}): void {
  describe(`${name} (UsageLedger contract)`, options, () => {
    const opened: UsageLedger[] = [];

    async function open(place = fixture.newPlace()): Promise<UsageLedger> {
      const ledger = await fixture.open(place);
      opened.push(ledger);
      return ledger;
    }

    afterEach(async () => {
      await Promise.all(opened.splice(0).map((ledger) => ledger.close()));
    });

    it('records a new event once: one prediction and its rows in the day\'s total, one inbox entry', async () => {
      const ledger = await open();
      assert.equal(await ledger.record(usageEvent({ rows: 3 })), 'recorded');
      assert.deepEqual(await ledger.report(), [{ clientId: 'client-a', day: '2024-03-01', predictions: 1, rows: 3 }]);
      assert.equal(await ledger.eventCount(), 1);
    });

    it('answers duplicate to a re-delivered id and changes nothing, even if the rest of the event differs', async () => {
      const ledger = await open();
      const event = usageEvent({ rows: 3 });
      await ledger.record(event);
      assert.equal(await ledger.record(event), 'duplicate');
      assert.equal(await ledger.record({ ...event, clientId: 'client-b', rows: 50, occurredAt: '2024-03-02T00:00:00.000Z' }), 'duplicate');
      assert.deepEqual(await ledger.report(), [{ clientId: 'client-a', day: '2024-03-01', predictions: 1, rows: 3 }]);
      assert.equal(await ledger.eventCount(), 1);
    });

    it('adds up predictions and rows per client per UTC day: 23:59:59.999Z and 00:00:00.000Z are two days', async () => {
      const ledger = await open();
      await ledger.record(usageEvent({ rows: 2, occurredAt: '2024-02-29T23:59:59.999Z' }));
      await ledger.record(usageEvent({ rows: 5, occurredAt: '2024-03-01T00:00:00.000Z' }));
      await ledger.record(usageEvent({ rows: 1, occurredAt: '2024-03-01T23:59:59.999Z' }));
      await ledger.record(usageEvent({ rows: 4, clientId: 'client-b', occurredAt: '2024-03-01T08:00:00.000Z' }));
      // 19:30 in New York on the 1st is 00:30 UTC on the 2nd.
      await ledger.record(usageEvent({ rows: 7, occurredAt: '2024-03-01T19:30:00.000-05:00' }));
      assert.deepEqual(await ledger.report(), [
        { clientId: 'client-a', day: '2024-02-29', predictions: 1, rows: 2 },
        { clientId: 'client-a', day: '2024-03-01', predictions: 2, rows: 6 },
        { clientId: 'client-b', day: '2024-03-01', predictions: 1, rows: 4 },
        { clientId: 'client-a', day: '2024-03-02', predictions: 1, rows: 7 },
      ]);
    });

    it('orders the report by day, then by client id in binary order, whatever the database locale', async () => {
      const ledger = await open();
      for (const clientId of ['b', 'é', 'a', 'B', '_']) await ledger.record(usageEvent({ clientId, occurredAt: '2024-03-02T00:00:00.000Z' }));
      await ledger.record(usageEvent({ clientId: 'z', occurredAt: '2024-03-01T00:00:00.000Z' }));
      assert.deepEqual(
        (await ledger.report()).map((total) => `${total.day} ${total.clientId}`),
        ['2024-03-01 z', '2024-03-02 B', '2024-03-02 _', '2024-03-02 a', '2024-03-02 b', '2024-03-02 é'],
      );
    });

    it('filters the report by client, by day, by both', async () => {
      const ledger = await open();
      await ledger.record(usageEvent({ clientId: 'client-a', occurredAt: '2024-03-01T10:00:00.000Z' }));
      await ledger.record(usageEvent({ clientId: 'client-b', occurredAt: '2024-03-01T10:00:00.000Z' }));
      await ledger.record(usageEvent({ clientId: 'client-a', occurredAt: '2024-03-02T10:00:00.000Z' }));
      const keys = async (filter: Parameters<UsageLedger['report']>[0]) => (await ledger.report(filter)).map((total) => `${total.day} ${total.clientId}`);
      assert.deepEqual(await keys({ clientId: 'client-a' }), ['2024-03-01 client-a', '2024-03-02 client-a']);
      assert.deepEqual(await keys({ day: '2024-03-01' }), ['2024-03-01 client-a', '2024-03-01 client-b']);
      assert.deepEqual(await keys({ clientId: 'client-b', day: '2024-03-01' }), ['2024-03-01 client-b']);
      assert.deepEqual(await keys({ clientId: 'client-b', day: '2024-03-02' }), []);
      assert.deepEqual(await keys({ clientId: 'client-c' }), []);
      assert.deepEqual(await keys({}), await keys(undefined));
    });

    it('rejects a filter with a day that is not a UTC date or an empty client id', async () => {
      const ledger = await open();
      for (const day of ['2024-02-30', '2024-3-1', '2024-03-01T00:00:00Z', '', 'today']) {
        await assert.rejects(ledger.report({ day }), InvalidUsageFilter, day);
      }
      await assert.rejects(ledger.report({ clientId: '' }), InvalidUsageFilter);
    });

    it('counts inbox entries in all or for one client', async () => {
      const ledger = await open();
      await ledger.record(usageEvent({ clientId: 'client-a' }));
      await ledger.record(usageEvent({ clientId: 'client-a', occurredAt: '2024-03-05T00:00:00.000Z' }));
      await ledger.record(usageEvent({ clientId: 'client-b' }));
      assert.equal(await ledger.eventCount(), 3);
      assert.equal(await ledger.eventCount('client-a'), 2);
      assert.equal(await ledger.eventCount('client-c'), 0);
    });

    it('counts one of 200 concurrent records of the same event', async () => {
      const ledger = await open();
      const event = usageEvent({ rows: 2 });
      const outcomes = await Promise.all(Array.from({ length: 200 }, () => ledger.record(event)));
      assert.equal(outcomes.filter((outcome) => outcome === 'recorded').length, 1);
      assert.equal(outcomes.filter((outcome) => outcome === 'duplicate').length, 199);
      assert.deepEqual(await ledger.report(), [{ clientId: 'client-a', day: '2024-03-01', predictions: 1, rows: 2 }]);
      assert.equal(await ledger.eventCount(), 1);
    });

    it('loses no update when 200 distinct events of one client and day are recorded at once', async () => {
      const ledger = await open();
      const outcomes = await Promise.all(Array.from({ length: 200 }, (_, index) => ledger.record(usageEvent({ rows: index + 1 }))));
      assert.ok(outcomes.every((outcome) => outcome === 'recorded'));
      assert.deepEqual(await ledger.report(), [{ clientId: 'client-a', day: '2024-03-01', predictions: 200, rows: (200 * 201) / 2 }]);
    });

    it('records a batch in one go: outcomes in input order, an id repeated in the batch or seen before is a duplicate', async () => {
      const ledger = await open();
      assert.ok(ledger.recordBatch, 'this implementation records batches');
      const seen = usageEvent({ rows: 1 });
      await ledger.record(seen);
      const fresh = usageEvent({ rows: 2 });
      const other = usageEvent({ rows: 4, clientId: 'client-b' });
      assert.deepEqual(await ledger.recordBatch([fresh, seen, fresh, other, { ...fresh, rows: 100 }]), ['recorded', 'duplicate', 'duplicate', 'recorded', 'duplicate']);
      assert.deepEqual(await ledger.recordBatch([]), []);
      assert.deepEqual(await ledger.report(), [
        { clientId: 'client-a', day: '2024-03-01', predictions: 2, rows: 3 },
        { clientId: 'client-b', day: '2024-03-01', predictions: 1, rows: 4 },
      ]);
      assert.equal(await ledger.eventCount(), 3);
    });

    it('refuses a malformed event before writing anything, so the same id can still be recorded', async () => {
      const ledger = await open();
      const valid = usageEvent({ rows: 2 });
      const malformed: unknown[] = [
        { ...valid, rows: 0 },
        { ...valid, rows: -1 },
        { ...valid, rows: 1.5 },
        { ...valid, rows: Number.NaN },
        { ...valid, rows: MAX_TOTAL + 1 },
        { ...valid, id: '' },
        { ...valid, clientId: '' },
        { ...valid, type: 'prediction.failed' },
        { ...valid, occurredAt: 'yesterday' },
        { ...valid, occurredAt: '+010000-01-01T00:00:00.000Z' },
        null,
      ];
      for (const event of malformed) await assert.rejects(ledger.record(event as UsageEvent), MalformedUsageEvent, JSON.stringify(event));
      await assert.rejects(ledger.recordBatch!([usageEvent(), { ...valid, rows: 0 }]), MalformedUsageEvent);
      assert.equal(await ledger.eventCount(), 0);
      assert.deepEqual(await ledger.report(), []);
      assert.equal(await ledger.record(valid), 'recorded');
    });

    it('rolls a record back whole when its total would overflow: the inbox does not keep its id', async () => {
      const ledger = await open();
      await ledger.record(usageEvent({ rows: MAX_TOTAL }));
      const overflowing = usageEvent({ rows: 1 });
      await assert.rejects(ledger.record(overflowing), UsageTotalOverflow);
      await assert.rejects(ledger.recordBatch!([usageEvent({ clientId: 'client-b' }), overflowing]), UsageTotalOverflow);
      assert.equal(await ledger.eventCount(), 1);
      assert.deepEqual(await ledger.report(), [{ clientId: 'client-a', day: '2024-03-01', predictions: 1, rows: MAX_TOTAL }]);
      assert.equal(await ledger.record({ ...overflowing, occurredAt: '2024-03-02T00:00:00.000Z' }), 'recorded');
    });

    it('keeps the inbox and totals across close and reopen: a re-delivery after a restart is still a duplicate', async () => {
      const place = fixture.newPlace();
      const first = await open(place);
      const event = usageEvent({ rows: 3 });
      await first.record(event);
      await first.close();

      const reopened = await open(place);
      assert.equal(await reopened.record(event), 'duplicate');
      assert.deepEqual(await reopened.report(), [{ clientId: 'client-a', day: '2024-03-01', predictions: 1, rows: 3 }]);
      assert.equal(await reopened.record(usageEvent({ rows: 1 })), 'recorded');
    });

    it('refuses a ledger written by a newer schema', async () => {
      const place = fixture.newPlace();
      await (await open(place)).close();
      await fixture.markNewerSchema(place);
      await assert.rejects(fixture.open(place), UnsupportedUsageSchema);
    });

    it('is healthy until closed, then refuses to be used', async () => {
      const ledger = await open();
      assert.equal(await ledger.healthy(), true);
      await ledger.close();
      assert.equal(await ledger.healthy(), false);
      await assert.rejects(ledger.record(usageEvent()), UsageLedgerClosed);
      await assert.rejects(ledger.report(), UsageLedgerClosed);
      await assert.rejects(ledger.eventCount(), UsageLedgerClosed);
      await ledger.close(); // twice is harmless
    });
  });
}
