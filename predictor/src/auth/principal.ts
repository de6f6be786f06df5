/** Who is calling: the one object the rest of the app reads after authentication. */
export interface Principal {
  clientId: string;
  scopes: ReadonlySet<string>;
  /** Rate-limit plan name (token `plan` claim). */
  plan: string;
  authMethod: 'bearer-jwt' | 'api-key';
  /** The signing key of a token (`kid`), for logs and key-rotation evidence. */
  keyId?: string | undefined;
  /** Token id (`jti`) or API key id, for logs. */
  tokenId: string | undefined;
  /**
   * RFC 9449 section 6.1: the token's `cnf.jkt`, the thumbprint of the key it is bound to.
   * Such a token is accepted only under the DPoP scheme, with a proof of that key, on every request.
   */
  boundKeyThumbprint?: string | undefined;
  /** Token expiry, seconds since the epoch; API keys don't expire (they are revoked). */
  expiresAt: number | undefined;
}
