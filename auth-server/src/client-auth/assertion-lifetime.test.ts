import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import { assertClientAssertionLifetime, excessiveAssertionLifetime } from './assertion-lifetime.js';
import { ClientAssertionLifetimeTooLong } from './errors.js';

const NOW = 1_800_000_000;
const BOUND = { maxSeconds: 300, toleranceSeconds: 15, now: NOW };

describe('client assertion lifetime', () => {
  it('accepts exp - iat up to the bound', () => {
    assert.equal(excessiveAssertionLifetime({ iat: NOW, exp: NOW + 60 }, BOUND), undefined);
    assert.equal(excessiveAssertionLifetime({ iat: NOW - 100, exp: NOW + 200 }, BOUND), undefined);
  });

  it('refuses exp - iat beyond the bound, e.g. an assertion valid for a year', () => {
    assert.equal(excessiveAssertionLifetime({ iat: NOW, exp: NOW + 301 }, BOUND), 301);
    assert.equal(excessiveAssertionLifetime({ iat: NOW, exp: NOW + 365 * 86_400 }, BOUND), 365 * 86_400);
  });

  it('without iat, measures exp - now (with the clock tolerance)', () => {
    assert.equal(excessiveAssertionLifetime({ exp: NOW + 315 }, BOUND), undefined);
    assert.equal(excessiveAssertionLifetime({ exp: NOW + 316 }, BOUND), 316);
  });

  it('refuses an iat set in the future to stretch the lifetime', () => {
    assert.equal(excessiveAssertionLifetime({ iat: NOW + 86_400, exp: NOW + 86_400 + 60 }, BOUND), 86_460);
  });

  it('is oidc-provider\'s hook: refuses with 401 invalid_client and says why', () => {
    const hook = assertClientAssertionLifetime({ maxSeconds: 300, toleranceSeconds: 15, nowSeconds: () => NOW });
    const ctx = {} as KoaContextWithOIDC;
    assert.doesNotThrow(() => hook(ctx, { iat: NOW, exp: NOW + 60 }, {}, {} as never));
    assert.throws(
      () => hook(ctx, { iat: NOW, exp: NOW + 365 * 86_400 }, {}, {} as never),
      (error: unknown) =>
        error instanceof ClientAssertionLifetimeTooLong &&
        error instanceof errors.InvalidClientAuth &&
        error.statusCode === 401 &&
        error.error === 'invalid_client' &&
        /lifetime too long: 31536000 s, at most 300 s/.test(error.error_description ?? ''),
    );
  });
});
