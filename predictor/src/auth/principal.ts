/** Who is calling: the one object the rest of the app reads after authentication. */
export interface Principal {
  clientId: string;
  scopes: ReadonlySet<string>;
  /** Rate-limit plan name (token `plan` claim). */
  plan: string;
  authMethod: 'bearer-jwt';
  /** Token id (`jti`), for logs. */
  tokenId: string | undefined;
  /** Token expiry, seconds since the epoch. */
  expiresAt: number;
}
