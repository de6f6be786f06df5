import type { UsageEvent } from '../usage-event.js';

/** A valid usage event for tests: client-a, one row, with `overrides` on top. */
export function usageEventFixture(id: string, overrides: Partial<UsageEvent> = {}): UsageEvent {
  return {
    id,
    type: 'prediction.executed',
    clientId: 'client-a',
    plan: 'standard',
    credential: { method: 'api-key', id: 'key-1' },
    rows: 1,
    modelId: 'iris',
    idempotencyKey: undefined,
    occurredAt: '2026-11-28T12:00:00.000Z',
    ...overrides,
  };
}
