import { InvalidAuthorizationRequest, UnsupportedAuthScheme, type AuthScheme } from '../http/problems.js';

// RFC 6750 section 2.1 (and RFC 9449 section 7.1 for DPoP): b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
// RFC 9110 section 11.1: auth-scheme = token.
const AUTH_SCHEME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The access token and the scheme it came under: `Bearer` (RFC 6750) or `DPoP` (RFC 9449 section 7.1). */
export interface AccessTokenCredentials {
  scheme: AuthScheme;
  token: string;
}

/**
 * Extracts the access token. Undefined when no credentials were sent; throws
 * UnsupportedAuthScheme (401, a challenge without error code) for credentials of another
 * scheme, and InvalidAuthorizationRequest (400 invalid_request) when the header is malformed.
 * Schemes are case-insensitive (RFC 9110 section 11.1).
 */
export function credentialsFrom(header: string | undefined): AccessTokenCredentials | undefined {
  if (header === undefined) return undefined;
  const parts = header.trim().split(/ +/);
  const name = parts[0]!;
  const scheme = name.toLowerCase() === 'bearer' ? 'Bearer' : name.toLowerCase() === 'dpop' ? 'DPoP' : undefined;
  if (AUTH_SCHEME.test(name) && scheme === undefined) throw new UnsupportedAuthScheme(name.slice(0, 20));
  // A token sent twice ("Bearer a, Bearer b") is malformed.
  if (parts.length !== 2 || scheme === undefined) {
    throw new InvalidAuthorizationRequest('The Authorization header must be exactly "Bearer <token>" or "DPoP <token>".');
  }
  const token = parts[1]!;
  if (!B64TOKEN.test(token)) {
    throw new InvalidAuthorizationRequest(`The ${scheme} token contains characters not allowed by RFC 6750.`);
  }
  return { scheme, token };
}
