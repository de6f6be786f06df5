import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newApiKey } from './api-keys.js';

describe('newApiKey', () => {
  it('reads m2mk_<id>_<secret>, and its id never starts with "-" (the CLI would read it as an option)', () => {
    // One random id in 32 used to start with '-': 2 000 keys without one had odds of (31/32)^2000, about 3e-28.
    for (let index = 0; index < 2_000; index += 1) {
      const { apiKey, record } = newApiKey({ clientId: 'batch-job', scopes: ['predict'], plan: 'standard', now: new Date(0) });
      assert.match(apiKey, /^m2mk_[A-Za-z0-9-]{16}_[A-Za-z0-9_-]{43}$/);
      assert.ok(apiKey.startsWith(`m2mk_${record.id}_`));
      assert.ok(!record.id.startsWith('-'), record.id);
    }
  });
});
