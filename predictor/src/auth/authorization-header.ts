import { InvalidAuthorizationRequest } from '../http/problems.js';

// RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * Extracts the bearer token. Undefined when no credentials were sent; throws
 * InvalidAuthorizationRequest (400 invalid_request) when the header is malformed.
 */
export function bearerTokenFrom(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  // Node joins repeated Authorization headers with ", ": a token sent twice is malformed.
  const parts = header.trim().split(/ +/);
  if (parts.length !== 2) {
    throw new InvalidAuthorizationRequest('The Authorization header must be exactly "Bearer <token>".');
  }
  const [scheme, token] = parts as [string, string];
  if (scheme.toLowerCase() !== 'bearer') {
    throw new InvalidAuthorizationRequest(`Unsupported authorization scheme "${scheme.slice(0, 20)}"; use Bearer.`);
  }
  if (!B64TOKEN.test(token)) {
    throw new InvalidAuthorizationRequest('The bearer token contains characters not allowed by RFC 6750.');
  }
  return token;
}
