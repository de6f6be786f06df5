import type { Configuration } from 'oidc-provider';
import { ClientAssertionLifetimeTooLong } from './errors.js';

export interface AssertionLifetimeOptions {
  /** The longest lifetime accepted (seconds): CLIENT_ASSERTION_MAX_LIFETIME, 300 by default (config.ts). */
  maxSeconds: number;
  /** Allowed clock skew (seconds): oidc-provider's `clockTolerance`, 15 by default. */
  toleranceSeconds: number;
  /** Current time in seconds since the epoch (injected for tests). */
  nowSeconds: () => number;
}

/**
 * The lifetime a client assertion claims, or undefined when it is within bounds.
 *
 * The lifetime is `exp - iat`; without `iat` it is `exp - now`. Either way the assertion
 * must also expire within `maxSeconds` (+ tolerance) from now, so an `iat` set in the
 * future cannot stretch it. Bounding the lifetime bounds what a leaked assertion is worth
 * and how long its replay record must be kept.
 */
export function excessiveAssertionLifetime(claims: { exp?: unknown; iat?: unknown }, options: Omit<AssertionLifetimeOptions, 'nowSeconds'> & { now: number }): number | undefined {
  const { exp, iat } = claims;
  // oidc-provider has already refused an assertion without a numeric exp.
  if (typeof exp !== 'number') return undefined;
  const remaining = exp - options.now;
  if (remaining > options.maxSeconds + options.toleranceSeconds) return Math.ceil(typeof iat === 'number' ? Math.max(exp - iat, remaining) : remaining);
  if (typeof iat === 'number' && exp - iat > options.maxSeconds) return Math.ceil(exp - iat);
  return undefined;
}

/**
 * oidc-provider's `assertJwtClientAuthClaimsAndHeader` hook: it runs after the assertion's
 * signature, `aud`, `iss` and `exp` were verified and before its `jti` is recorded, so a
 * refused assertion leaves no replay record. Throws 401 `invalid_client`.
 */
export function assertClientAssertionLifetime(options: AssertionLifetimeOptions): NonNullable<Configuration['assertJwtClientAuthClaimsAndHeader']> {
  return function assertLifetime(_ctx, claims) {
    const lifetime = excessiveAssertionLifetime(claims, { ...options, now: options.nowSeconds() });
    if (lifetime !== undefined) throw new ClientAssertionLifetimeTooLong(lifetime, options.maxSeconds);
  };
}
