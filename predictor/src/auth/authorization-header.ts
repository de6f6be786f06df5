import { InvalidAuthorizationRequest, UnsupportedAuthScheme } from '../http/problems.js';

// RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
// RFC 9110 section 11.1: auth-scheme = token.
const AUTH_SCHEME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Extracts the bearer token. Undefined when no credentials were sent; throws
 * UnsupportedAuthScheme (401, a challenge without error code) for credentials of another
 * scheme, and InvalidAuthorizationRequest (400 invalid_request) when the header is malformed.
 */
export function bearerTokenFrom(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const parts = header.trim().split(/ +/);
  const scheme = parts[0]!;
  if (AUTH_SCHEME.test(scheme) && scheme.toLowerCase() !== 'bearer') throw new UnsupportedAuthScheme(scheme.slice(0, 20));
  // A token sent twice ("Bearer a, Bearer b") is malformed.
  if (parts.length !== 2) {
    throw new InvalidAuthorizationRequest('The Authorization header must be exactly "Bearer <token>".');
  }
  const token = parts[1]!;
  if (!B64TOKEN.test(token)) {
    throw new InvalidAuthorizationRequest('The bearer token contains characters not allowed by RFC 6750.');
  }
  return token;
}
