import type { AccessToken } from '../tokens/token-source.js';

/** A DPoP-bound token without the key it is bound to: it cannot be presented, and is never sent as Bearer. */
export class UnprovableTokenError extends Error {
  override name = 'UnprovableTokenError';
}

/**
 * The headers that present `token` on one request: `Authorization: Bearer <token>`, or for a
 * DPoP-bound token `Authorization: DPoP <token>` and a new `DPoP` proof of its key for this method
 * and URL (RFC 9449 section 7.1). The one place the scheme is chosen, from the token's own type.
 */
export async function authorizationHeaders(token: AccessToken, request: { method: string; url: string }): Promise<Record<string, string>> {
  if (token.tokenType !== 'DPoP') return { authorization: `Bearer ${token.value}` };
  if (!token.dpopKey) throw new UnprovableTokenError('a DPoP-bound token came without its key: it is not sent (a bound token never goes as Bearer)');
  return { authorization: `DPoP ${token.value}`, dpop: await token.dpopKey.proof({ method: request.method, url: request.url, accessToken: token.value }) };
}
