import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { errors, exportJWK, generateKeyPair } from 'jose';
import { createLogger } from '@m2m/common';
import { KeysUnavailable } from '../http/problems.js';
import { KeySet } from './key-set.js';

const ISSUER = 'https://issuer.test';
const logger = createLogger('predictor', 'silent');

async function publicJwk(kid: string) {
  const { publicKey } = await generateKeyPair('ES256', { extractable: true });
  return { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' };
}

/** A JWKS endpoint whose keys and availability the test controls; counts JWKS fetches. */
async function keyServer(initialKids: string[]) {
  const state = { keys: await Promise.all(initialKids.map(publicJwk)), up: true, fetches: 0 };
  const fetchStub: typeof fetch = async (input) => {
    const url = String(input);
    if (!state.up) throw new TypeError('fetch failed');
    if (url.endsWith('/.well-known/oauth-authorization-server')) return Response.json({ issuer: ISSUER, jwks_uri: `${ISSUER}/jwks` });
    state.fetches += 1;
    return Response.json({ keys: state.keys });
  };
  return { state, fetch: fetchStub };
}

function clock() {
  let now = 1_000_000;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

const header = (kid: string) => ({ alg: 'ES256', kid });
const getKey = (keys: KeySet, kid: string) => (keys.getKey as (h: object) => Promise<unknown>)(header(kid));

describe('KeySet', () => {
  it('answers 503 with Retry-After, not 401, before any key was loaded', async () => {
    const server = await keyServer(['a']);
    server.state.up = false;
    const keys = new KeySet({ issuer: ISSUER, logger, fetch: server.fetch });
    await assert.rejects(getKey(keys, 'a'), (error: unknown) => error instanceof KeysUnavailable && Number(error.headers['retry-after']) >= 1);
    assert.equal(keys.ready, false);
  });

  it('loads before reporting ready and resolves known keys without refetching', async () => {
    const server = await keyServer(['a', 'b']);
    const keys = new KeySet({ issuer: ISSUER, logger, fetch: server.fetch });
    await keys.load();
    assert.equal(keys.ready, true);
    await Promise.all(Array.from({ length: 20 }, () => getKey(keys, 'b')));
    assert.equal(server.state.fetches, 1);
  });

  it('shares one refetch among concurrent verifications of a new kid', async () => {
    const server = await keyServer(['a']);
    const time = clock();
    const keys = new KeySet({ issuer: ISSUER, logger, fetch: server.fetch, now: time.now, cooldownMs: 30_000 });
    await keys.load();
    time.advance(30_000);
    server.state.keys.push(await publicJwk('rotated'));
    await Promise.all(Array.from({ length: 50 }, () => getKey(keys, 'rotated')));
    assert.equal(server.state.fetches, 2);
  });

  it('refetches for an unknown kid at most once per cool-down', async () => {
    const server = await keyServer(['a']);
    const time = clock();
    const keys = new KeySet({ issuer: ISSUER, logger, fetch: server.fetch, now: time.now, cooldownMs: 30_000 });
    await keys.load();
    for (let i = 0; i < 100; i += 1) {
      await assert.rejects(getKey(keys, `unknown-${i}`), errors.JWKSNoMatchingKey);
      time.advance(100); // 100 attempts over 10 s: still inside the cool-down
    }
    assert.equal(server.state.fetches, 1);
    time.advance(30_000);
    await assert.rejects(getKey(keys, 'unknown'), errors.JWKSNoMatchingKey);
    assert.equal(server.state.fetches, 2);
  });

  it('keeps verifying with the last known keys while the key server is down, up to the stale-if-error bound', async () => {
    const server = await keyServer(['a']);
    const time = clock();
    const keys = new KeySet({ issuer: ISSUER, logger, fetch: server.fetch, now: time.now, maxAgeMs: 600_000, staleIfErrorMs: 3_600_000, cooldownMs: 30_000 });
    await keys.load();
    server.state.up = false;
    time.advance(600_000 + 3_600_000 - 1);
    assert.ok(await getKey(keys, 'a'), 'a known key still verifies while refreshes fail');
    await assert.rejects(getKey(keys, 'unknown'), errors.JWKSNoMatchingKey);
    time.advance(1);
    assert.equal(keys.ready, false);
    await assert.rejects(getKey(keys, 'a'), KeysUnavailable);
    server.state.up = true;
    time.advance(30_000);
    assert.ok(await getKey(keys, 'a'), 'recovers by itself once the key server is back');
  });

  it('drops a key the issuer no longer publishes at the next refresh', async () => {
    const server = await keyServer(['old', 'new']);
    const time = clock();
    const keys = new KeySet({ issuer: ISSUER, logger, fetch: server.fetch, now: time.now, maxAgeMs: 60_000, cooldownMs: 1_000 });
    await keys.load();
    server.state.keys = server.state.keys.filter((key) => key.kid !== 'old');
    time.advance(60_000);
    await getKey(keys, 'new'); // triggers the background refresh
    await new Promise((resolve) => setImmediate(resolve));
    await assert.rejects(getKey(keys, 'old'), errors.JWKSNoMatchingKey);
  });

  it('refuses a key whose algorithm differs from the token header', async () => {
    const server = await keyServer(['a']);
    const keys = new KeySet({ issuer: ISSUER, logger, fetch: server.fetch });
    await keys.load();
    await assert.rejects((keys.getKey as (h: object) => Promise<unknown>)({ alg: 'RS256', kid: 'a' }), errors.JWKSNoMatchingKey);
  });
});

describe('KeySet.has', () => {
  it('refreshes stale keys too, so a token cache that only asks has() still sees a revoked key go', async () => {
    const server = await keyServer(['a']);
    const time = clock();
    const keys = new KeySet({ issuer: ISSUER, logger, fetch: server.fetch, now: time.now, maxAgeMs: 2_000, cooldownMs: 1_000 });
    await keys.load();
    assert.equal(keys.has('a'), true);
    server.state.keys = [];
    time.advance(2_000);
    keys.has('a'); // starts the background refresh
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(keys.has('a'), false);
  });
});
