import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError } from '@m2m/common';
import { loadCallerConfig } from './config.js';

describe('loadCallerConfig', () => {
  it('re-reads CLIENT_SECRET_FILE when it changes, so a rotated secret is used without a restart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'caller-config-'));
    const file = join(dir, 'secret');
    await writeFile(file, 'first-secret\n');
    const config = loadCallerConfig({ CLIENT_ID: 'c', CLIENT_SECRET_FILE: file });
    assert.equal(config.clientSecret?.(), 'first-secret');
    await writeFile(file, 'second-secret-longer\n');
    assert.equal(config.clientSecret?.(), 'second-secret-longer');
    await rm(dir, { recursive: true });
  });

  it('names the variable when the configuration is unusable, without echoing a secret', () => {
    assert.throws(() => loadCallerConfig({}), /^ConfigError: CLIENT_ID is required$/);
    assert.throws(() => loadCallerConfig({ CLIENT_ID: 'c' }), /CLIENT_SECRET, CLIENT_SECRET_FILE or CLIENT_PRIVATE_KEY_FILE is required/);
    assert.throws(() => loadCallerConfig({ CLIENT_ID: 'c', CLIENT_SECRET: 'hunter2-secret', CLIENT_SECRET_FILE: '/x' }), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.doesNotMatch(error.message, /hunter2/);
      return true;
    });
    assert.throws(() => loadCallerConfig({ CLIENT_ID: 'c', CLIENT_SECRET_FILE: '/nonexistent/secret' }), /CLIENT_SECRET_FILE: cannot read/);
    assert.throws(() => loadCallerConfig({ CLIENT_ID: 'c', CLIENT_SECRET: 's', PREDICTOR_URL: 'ftp://x' }), /^ConfigError: PREDICTOR_URL/);
  });
});
