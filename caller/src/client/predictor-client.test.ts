import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { sendJson, startStubServer } from '../testing/stub-server.js';
import type { AccessToken } from '../tokens/token-source.js';
import { PredictorApiError } from './errors.js';
import { PredictorClient } from './predictor-client.js';

const stubs: { close: () => Promise<void> }[] = [];
after(() => Promise.all(stubs.map((stub) => stub.close())));

/** Tokens tok-1, tok-2, …: a new one after each invalidation. */
function fakeTokens() {
  let generation = 1;
  let current: AccessToken = { value: 'tok-1', scope: 'predict', expiresAt: Infinity, refreshAt: Infinity };
  return {
    invalidations: 0,
    async getToken() {
      return current;
    },
    invalidate(token: AccessToken) {
      if (token !== current) return;
      this.invalidations += 1;
      generation += 1;
      current = { ...current, value: `tok-${generation}` };
    },
  };
}

async function predictor(answer: (authorization: string, attempt: number) => [number, unknown, Record<string, string>?]) {
  let attempt = 0;
  const stub = await startStubServer((request, _body, response) => {
    attempt += 1;
    const [status, body, headers] = answer(request.headers.authorization ?? '', attempt);
    sendJson(response, status, body, headers);
  });
  stubs.push(stub);
  return stub;
}

const OK = { id: 'pred_1', model: 'iris-softmax-v1', created: 0, predictions: [] };
const INVALID_TOKEN = { 'www-authenticate': 'Bearer realm="predictor", error="invalid_token"' };

describe('PredictorClient', () => {
  it('sends the bearer token and one Idempotency-Key per logical prediction', async () => {
    const stub = await predictor(() => [200, OK]);
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens() });
    await client.predict([[1, 2, 3, 4]]);
    await client.predict([[1, 2, 3, 4]], { idempotencyKey: 'mine' });
    const [first, second] = stub.requests;
    assert.equal(first?.headers.authorization, 'Bearer tok-1');
    assert.match(String(first?.headers['idempotency-key']), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(second?.headers['idempotency-key'], 'mine');
    assert.deepEqual(JSON.parse(first?.body ?? ''), { inputs: [[1, 2, 3, 4]] });
  });

  it('on 401 refreshes the token once and replays with the same Idempotency-Key', async () => {
    const stub = await predictor((authorization) => (authorization === 'Bearer tok-1' ? [401, { status: 401 }, INVALID_TOKEN] : [200, OK]));
    const tokens = fakeTokens();
    const client = new PredictorClient({ baseUrl: stub.url, tokens });
    assert.deepEqual(await client.predict([[1, 2, 3, 4]]), OK);
    assert.equal(tokens.invalidations, 1);
    assert.equal(stub.requests.length, 2);
    assert.equal(stub.requests[0]?.headers['idempotency-key'], stub.requests[1]?.headers['idempotency-key']);
  });

  it('treats a second 401 as final', async () => {
    const stub = await predictor(() => [401, { status: 401, detail: 'expired' }, INVALID_TOKEN]);
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens() });
    await assert.rejects(client.predict([[1, 2, 3, 4]]), (error: unknown) => error instanceof PredictorApiError && error.status === 401 && error.attempts === 2 && error.authError === 'invalid_token');
    assert.equal(stub.requests.length, 2);
  });

  it('stops at once on 403 with the insufficient_scope reason', async () => {
    const stub = await predictor(() => [403, { status: 403, detail: 'needs predict' }, { 'www-authenticate': 'Bearer realm="predictor", error="insufficient_scope", scope="predict"' }]);
    const client = new PredictorClient({ baseUrl: stub.url, tokens: fakeTokens() });
    await assert.rejects(client.predict([[1, 2, 3, 4]]), (error: unknown) => error instanceof PredictorApiError && error.status === 403 && error.authError === 'insufficient_scope');
    assert.equal(stub.requests.length, 1);
  });
});
