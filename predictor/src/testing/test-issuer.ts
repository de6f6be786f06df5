import { randomUUID } from 'node:crypto';
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT, type JWTPayload, type JWTVerifyGetKey } from 'jose';

export const TEST_ISSUER = 'https://issuer.test';
export const TEST_AUDIENCE = 'https://predictor.test';

/** An in-memory issuer for tests: one published key, and helpers to mint good and bad tokens. */
export async function createTestIssuer() {
  const published = await generateKeyPair('ES256');
  const unpublished = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(published.publicKey)), kid: 'published', alg: 'ES256', use: 'sig' };
  const getKey: JWTVerifyGetKey = createLocalJWKSet({ keys: [jwk] });

  async function token(options: { claims?: JWTPayload; header?: Record<string, unknown>; signWith?: 'published' | 'unpublished' } = {}) {
    const now = Math.floor(Date.now() / 1000);
    const claims: JWTPayload = {
      iss: TEST_ISSUER,
      aud: TEST_AUDIENCE,
      sub: 'demo-caller',
      client_id: 'demo-caller',
      scope: 'predict models:read',
      plan: 'standard',
      jti: randomUUID(),
      iat: now,
      exp: now + 300,
      ...options.claims,
    };
    const unpublishedKey = options.signWith === 'unpublished';
    return new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: unpublishedKey ? 'unpublished' : 'published', ...options.header } as { alg: string })
      .sign(unpublishedKey ? unpublished.privateKey : published.privateKey);
  }

  return { getKey, token };
}

/** An unsigned token (`alg: none`), which must never be accepted. */
export function unsignedToken(claims: JWTPayload): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${encode({ alg: 'none', typ: 'at+jwt' })}.${encode(claims)}.`;
}
