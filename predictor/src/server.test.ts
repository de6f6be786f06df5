import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildApp } from './app.js';
import { close, listen } from './server.js';
import { testDeps } from './testing/test-app.js';

describe('graceful shutdown', () => {
  it('stops accepting but finishes the request in flight before close() resolves', async () => {
    let markInFlight!: () => void;
    const inFlight = new Promise<void>((resolve) => (markInFlight = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const app = buildApp(
      testDeps({
        verifyToken: async () => {
          markInFlight();
          await released;
          return { clientId: 'c', scopes: new Set(['predict']), plan: 'standard', authMethod: 'bearer-jwt', tokenId: undefined, expiresAt: undefined };
        },
      }),
    );
    const { server, port } = await listen(app, 0, '127.0.0.1');
    const response = fetch(`http://127.0.0.1:${port}/v1/predict`, {
      method: 'POST',
      headers: { authorization: 'Bearer t', 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: [[5.1, 3.5, 1.4, 0.2]] }),
    });
    await inFlight;
    let closed = false;
    const closing = close(server).then(() => (closed = true));
    await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`), 'no new connections are accepted');
    assert.equal(closed, false);
    release();
    assert.equal((await response).status, 200);
    await closing;
    assert.equal(closed, true);
  });
});
