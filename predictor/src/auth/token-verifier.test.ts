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

describe('token time claims (RFC 9068 section 4)', () => {
  const TOLERANCE_SECONDS = 5;
  async function setup() {
    const issuer = await createTestIssuer();
    const now = Date.UTC(2026, 10, 23, 12, 0, 0);
    const verify = createTokenVerifier({ issuer: TEST_ISSUER, audience: TEST_AUDIENCE, algorithms: ['ES256'], clockToleranceSeconds: TOLERANCE_SECONDS, getKey: issuer.getKey, now: () => now });
    const seconds = now / 1000;
    return { issuer, verify, seconds };
  }
  const refusedFor = (pattern: RegExp) => (error: unknown) => {
    assert.ok(error instanceof InvalidToken);
    assert.equal(error.status, 401);
    assert.match(error.detail, pattern);
    assert.match(error.headers['www-authenticate'] ?? '', /error="invalid_token"/);
    return true;
  };

  it('refuses a token issued one hour in the future', async () => {
    const { issuer, verify, seconds } = await setup();
    const token = await issuer.token({ claims: { iat: seconds + 3600, exp: seconds + 3900 } });
    await assert.rejects(verify(token), refusedFor(/issued in the future/));
  });

  it('accepts an iat in the future by no more than CLOCK_TOLERANCE, and refuses one a second beyond it', async () => {
    const { issuer, verify, seconds } = await setup();
    await verify(await issuer.token({ claims: { iat: seconds + TOLERANCE_SECONDS, exp: seconds + 300 } }));
    await assert.rejects(verify(await issuer.token({ claims: { iat: seconds + TOLERANCE_SECONDS + 1, exp: seconds + 300 } })), refusedFor(/issued in the future/));
  });

  it('refuses a token without iat as missing iat, not as "not yet valid"', async () => {
    const { issuer, verify, seconds } = await setup();
    const token = await issuer.token({ claims: { iat: undefined, exp: seconds + 300 } });
    await assert.rejects(verify(token), refusedFor(/no "iat" claim/));
  });

  it('refuses a token whose iat is not a number', async () => {
    const { issuer, verify, seconds } = await setup();
    const token = await issuer.token({ claims: { iat: String(seconds) as unknown as number, exp: seconds + 300 } });
    await assert.rejects(verify(token), refusedFor(/"iat" is not a NumericDate/));
  });
});

describe('sender-constrained tokens (RFC 9449 section 6.1)', () => {
  async function setup() {
    const issuer = await createTestIssuer();
    const verify = createTokenVerifier({ issuer: TEST_ISSUER, audience: TEST_AUDIENCE, algorithms: ['ES256'], clockToleranceSeconds: 5, getKey: issuer.getKey });
    return { issuer, verify };
  }

  it('carries cnf.jkt into the principal, so the middleware asks for a proof of that key', async () => {
    const { issuer, verify } = await setup();
    assert.equal((await verify(await issuer.token({ claims: { cnf: { jkt: 'thumbprint' } } }))).boundKeyThumbprint, 'thumbprint');
    assert.equal((await verify(await issuer.token())).boundKeyThumbprint, undefined);
  });

  it('refuses a confirmation it cannot check (mTLS x5t#S256, an empty jkt) rather than take the token as a bearer token', async () => {
    const { issuer, verify } = await setup();
    for (const cnf of [{ 'x5t#S256': 'abc' }, { jkt: '' }, { jkt: 'a', 'x5t#S256': 'b' }, 'jkt']) {
      await assert.rejects(verify(await issuer.token({ claims: { cnf } })), (error: unknown) => error instanceof InvalidToken && /confirmation method/.test(error.detail), JSON.stringify(cnf));
    }
  });
});
