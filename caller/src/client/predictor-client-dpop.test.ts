import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { EmbeddedJWK, calculateJwkThumbprint, jwtVerify, type JWK } from 'jose';
import { accessTokenHash, DPoPKey } from '../dpop/dpop-key.js';
import { UnprovableTokenError } from '../dpop/authorization.js';
import { RetryBudget } from '../retry/retry-budget.js';
import { ManualClock } from '../testing/manual-clock.js';
import { sendJson, startStubIssuer, startStubServer } from '../testing/stub-server.js';
import { TokenSource, type AccessToken } from '../tokens/token-source.js';
import { PredictorApiError } from './errors.js';
import { PredictorClient, type AttemptEvent } from './predictor-client.js';

const stubs: { close: () => Promise<void> }[] = [];
after(() => Promise.all(stubs.map((stub) => stub.close())));

const OK = { id: 'pred_1', model: 'iris-softmax-v1', created: 0, predictions: [] };
const ROWS: [number, number, number, number][] = [[1, 2, 3, 4]];
const USE_NONCE = (nonce: string) => ({ 'www-authenticate': 'Bearer realm="predictor", DPoP realm="predictor", error="use_dpop_nonce", error_description="use the one in DPoP-Nonce", algs="ES256"', 'dpop-nonce': nonce });

/** What the predictor saw of one request: the scheme, the token, and the proof verified with the key in its header. */
interface Seen {
  scheme: string;
  token: string;
  proof: Record<string, unknown> | undefined;
  thumbprint: string | undefined;
}

/** A predictor that verifies every DPoP proof it gets (signature, typ) and answers from `answer`. */
async function dpopPredictor(answer: (seen: Seen, index: number) => [number, unknown, Record<string, string>?]) {
  const seen: Seen[] = [];
  const stub = await startStubServer(async (request, _body, response) => {
    const [scheme = '', token = ''] = (request.headers.authorization ?? '').split(' ');
    const header = request.headers['dpop'] as string | undefined;
    let proof: Record<string, unknown> | undefined;
    let thumbprint: string | undefined;
    if (header) {
      const verified = await jwtVerify(header, EmbeddedJWK, { typ: 'dpop+jwt' });
      proof = verified.payload as Record<string, unknown>;
      thumbprint = await calculateJwkThumbprint(verified.protectedHeader.jwk as JWK);
    }
    const entry = { scheme, token, proof, thumbprint };
    seen.push(entry);
    const [status, body, headers] = answer(entry, seen.length);
    sendJson(response, status, body, headers);
  });
  stubs.push(stub);
  return { ...stub, seen };
}

async function dpopTokens() {
  const issuer = await startStubIssuer();
  stubs.push(issuer);
  const key = await DPoPKey.generate();
  return { issuer, key, tokens: new TokenSource({ issuer: issuer.url, clientId: 'c', clientSecret: () => 's', dpop: key }) };
}

describe('PredictorClient with DPoP-bound tokens', () => {
  it('sends Authorization: DPoP and a new proof on every attempt (fresh jti, htm POST, htu the request URL, ath of that token), never Bearer', async () => {
    const { key, tokens } = await dpopTokens();
    // 401 invalid_token (refresh), 503 (backoff), then 200: three attempts, two tokens.
    const predictor = await dpopPredictor((_seen, index) =>
      index === 1 ? [401, {}, { 'www-authenticate': 'DPoP realm="predictor", error="invalid_token"' }] : index === 2 ? [503, {}] : [200, OK],
    );
    const client = new PredictorClient({ baseUrl: predictor.url, tokens, clock: new ManualClock(), random: () => 0 });
    assert.deepEqual(await client.predict(ROWS), OK);
    assert.equal(predictor.seen.length, 3);
    assert.deepEqual(predictor.seen.map((seen) => [seen.scheme, seen.token]), [['DPoP', 'tok-1'], ['DPoP', 'tok-2'], ['DPoP', 'tok-2']]);
    for (const seen of predictor.seen) {
      assert.equal(seen.thumbprint, key.thumbprint);
      assert.equal(seen.proof?.['htm'], 'POST');
      assert.equal(seen.proof?.['htu'], `${predictor.url}/v1/predict`);
      assert.equal(seen.proof?.['ath'], accessTokenHash(seen.token));
      assert.equal(typeof seen.proof?.['iat'], 'number');
    }
    assert.equal(new Set(predictor.seen.map((seen) => seen.proof?.['jti'])).size, 3, 'one jti per attempt');
    await client.listModels();
    assert.equal(predictor.seen[3]?.proof?.['htm'], 'GET');
    assert.equal(predictor.seen[3]?.proof?.['htu'], `${predictor.url}/v1/models`);
  });

  it('answers 401 use_dpop_nonce at once with the nonce, outside the attempts and the retry budget, and uses the latest nonce next time', async () => {
    const { tokens } = await dpopTokens();
    let current = 'n-1';
    const predictor = await dpopPredictor((seen) => {
      if (seen.proof?.['nonce'] !== current) return [401, {}, USE_NONCE(current)];
      current = 'n-2'; // the server moved on: the answer hands out the next one
      return [200, OK, { 'dpop-nonce': 'n-2' }];
    });
    const clock = new ManualClock();
    const events: AttemptEvent[] = [];
    // No budget and a single attempt: a charged or counted retry would stop the call.
    const client = new PredictorClient({ baseUrl: predictor.url, tokens, clock, maxAttempts: 1, retryBudget: new RetryBudget({ capacity: 0 }), onAttempt: (event) => events.push(event) });
    assert.deepEqual(await client.predict(ROWS), OK);
    assert.deepEqual(
      events.map(({ attempt, status, next, waitMs, reason }) => ({ attempt, status, next, waitMs, reason })),
      [
        { attempt: 1, status: 401, next: 'retry', waitMs: 0, reason: 'dpop-nonce' },
        { attempt: 2, status: 200, next: 'done', waitMs: 0, reason: 'success' },
      ],
    );
    assert.deepEqual(clock.sleeps, []);
    assert.deepEqual(predictor.seen.map((seen) => seen.proof?.['nonce']), [undefined, 'n-1']);
    assert.equal(predictor.seen[0]?.proof?.['jti'] === predictor.seen[1]?.proof?.['jti'], false);
    assert.equal(predictor.seen[0]?.token, predictor.seen[1]?.token, 'the same token: a nonce is no reason to refresh it');
    assert.equal(tokens.tokenRequests, 1);

    await client.predict(ROWS);
    assert.equal(predictor.seen.length, 3, 'the remembered nonce is good: one request');
    assert.equal(predictor.seen[2]?.proof?.['nonce'], 'n-2');
  });

  it('treats use_dpop_nonce right after a nonce retry as final, without refreshing the token', async () => {
    const { tokens } = await dpopTokens();
    let count = 0;
    const predictor = await dpopPredictor(() => [401, { status: 401 }, USE_NONCE(`n-${(count += 1)}`)]);
    const client = new PredictorClient({ baseUrl: predictor.url, tokens, clock: new ManualClock() });
    await assert.rejects(client.predict(ROWS), (error: unknown) => error instanceof PredictorApiError && error.status === 401 && error.authError === 'use_dpop_nonce' && error.attempts === 2);
    assert.equal(predictor.seen.length, 2);
    assert.equal(tokens.tokenRequests, 1);
  });

  it('stops on a use_dpop_nonce challenge that hands out no DPoP-Nonce (nothing to retry with), without refreshing the token', async () => {
    const { tokens } = await dpopTokens();
    const predictor = await dpopPredictor(() => [401, { status: 401 }, { 'www-authenticate': 'DPoP error="use_dpop_nonce"' }]);
    const client = new PredictorClient({ baseUrl: predictor.url, tokens, clock: new ManualClock() });
    await assert.rejects(client.predict(ROWS), (error: unknown) => error instanceof PredictorApiError && error.attempts === 1);
    assert.equal(tokens.tokenRequests, 1);
  });

  it('never sends a DPoP-bound token without its key: no request at all, and never as Bearer', async () => {
    const predictor = await dpopPredictor(() => [200, OK]);
    const bound: AccessToken = { value: 'bound-token', tokenType: 'DPoP', cacheKey: 'k', scope: 'predict', requestedAt: 0, expiresAt: Infinity, refreshAt: Infinity };
    const client = new PredictorClient({ baseUrl: predictor.url, tokens: { getToken: async () => bound, invalidate: () => {} } });
    await assert.rejects(client.predict(ROWS), UnprovableTokenError);
    assert.equal(predictor.seen.length, 0);
  });
});
