import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createTestIssuer, TEST_AUDIENCE, TEST_ISSUER } from '../testing/test-issuer.js';
import { InvalidToken } from '../http/problems.js';
import { createTokenVerifier } from './token-verifier.js';

describe('token verification cache', () => {
  async function setup(options: { cacheSize?: number } = {}) {
    const issuer = await createTestIssuer();
    let keyLookups = 0;
    let now = Date.now();
    let published = true;
    const verify = createTokenVerifier({
      issuer: TEST_ISSUER,
      audience: TEST_AUDIENCE,
      algorithms: ['ES256'],
      clockToleranceSeconds: 0,
      getKey: (header, token) => {
        keyLookups += 1;
        return (issuer.getKey as (h: typeof header, t: typeof token) => ReturnType<typeof issuer.getKey>)(header, token);
      },
      now: () => now,
      isKeyPublished: () => published,
      ...options,
    });
    return { issuer, verify, lookups: () => keyLookups, advance: (ms: number) => (now += ms), unpublish: () => (published = false) };
  }

  it('verifies a token once and serves it from the cache afterwards', async () => {
    const { issuer, verify, lookups } = await setup();
    const token = await issuer.token();
    const first = await verify(token);
    assert.equal(await verify(token), first);
    assert.equal(lookups(), 1);
  });

  it('never trusts a cached token past its exp', async () => {
    const { issuer, verify, advance } = await setup();
    const token = await issuer.token({ claims: { exp: Math.floor(Date.now() / 1000) + 10 } });
    await verify(token);
    advance(11_000);
    await assert.rejects(verify(token), InvalidToken);
  });

  it('verifies again (and refuses) once the signing key is no longer published', async () => {
    const { issuer, verify, lookups, unpublish } = await setup();
    const token = await issuer.token();
    await verify(token);
    unpublish();
    await verify(token).catch(() => {});
    assert.equal(lookups(), 2);
  });

  it('stays within its size bound', async () => {
    const { issuer, verify, lookups } = await setup({ cacheSize: 2 });
    const tokens = [await issuer.token(), await issuer.token(), await issuer.token()];
    for (const token of tokens) await verify(token);
    await verify(tokens[0]!); // evicted: verified again
    assert.equal(lookups(), 4);
  });
});
