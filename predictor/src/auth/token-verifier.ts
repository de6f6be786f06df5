import { errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { HttpProblem, InvalidToken, KeysUnavailable } from '../http/problems.js';
import type { Principal } from './principal.js';

export interface TokenVerifierOptions {
  issuer: string;
  audience: string;
  /** Asymmetric algorithms accepted in the token header; `none` and HS* never are. */
  algorithms: string[];
  /** Allowed clock skew (in seconds) for `exp`, `nbf` and `iat`. */
  clockToleranceSeconds: number;
  getKey: JWTVerifyGetKey;
  /** Current time; injectable for tests. Default `Date.now`. */
  now?: () => number;
  /**
   * Verified tokens kept (LRU) so a token seen again skips the signature check. Each
   * entry is trusted only until the token's `exp` and while its key is still published.
   * Default 10 000; 0 disables the cache.
   */
  cacheSize?: number;
  /** Whether a key id is still in the JWKS; a cached token of a removed key is verified again (and refused). */
  isKeyPublished?: (kid: string | undefined) => boolean;
}

export type TokenVerifier = (token: string) => Promise<Principal>;

/** RFC 9068 section 2.2: the claims every JWT access token carries. */
const REQUIRED_CLAIMS = ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'];

/** Verifies an RFC 9068 access token (section 4) and turns it into a Principal. */
export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  const now = options.now ?? Date.now;
  const cacheSize = options.cacheSize ?? 10_000;
  const isKeyPublished = options.isKeyPublished ?? (() => true);
  // A Map iterates in insertion order: re-inserting on a hit makes it an LRU.
  const verified = new Map<string, Principal>();
  return async function verifyAccessToken(token) {
    const cached = verified.get(token);
    if (cached) {
      verified.delete(token);
      if (cached.expiresAt !== undefined && now() < cached.expiresAt * 1000 && isKeyPublished(cached.keyId)) {
        verified.set(token, cached);
        return cached;
      }
    }
    let payload: JWTPayload;
    let keyId: string | undefined;
    try {
      ({ payload, protectedHeader: { kid: keyId } } = await jwtVerify(token, options.getKey, {
        issuer: options.issuer,
        audience: options.audience,
        typ: 'at+jwt',
        algorithms: options.algorithms,
        clockTolerance: options.clockToleranceSeconds,
        requiredClaims: REQUIRED_CLAIMS,
        currentDate: new Date(now()),
      }));
    } catch (error) {
      throw toProblem(error);
    }
    // jose checks `iat` only together with maxTokenAge; RFC 9068 section 4 asks for it on its own.
    if ((payload.iat as number) > now() / 1000 + options.clockToleranceSeconds) {
      throw new InvalidToken('The token was issued in the future (iat is later than now plus the allowed clock skew).');
    }
    const principal = principalFrom(payload, keyId);
    if (cacheSize > 0) {
      if (verified.size >= cacheSize) verified.delete(verified.keys().next().value!);
      verified.set(token, principal);
    }
    return principal;
  };
}

function principalFrom(payload: JWTPayload, keyId: string | undefined): Principal {
  const { client_id: clientId, scope, plan, cnf } = payload;
  if (typeof clientId !== 'string' || clientId === '') throw new InvalidToken('The token has no client_id.');
  // A confirmation this predictor cannot check (mTLS `x5t#S256`, a `jwk`) must not be ignored: the token would pass as a bearer token.
  if (cnf !== undefined && !(isRecord(cnf) && typeof cnf['jkt'] === 'string' && cnf['jkt'] !== '' && Object.keys(cnf).length === 1)) {
    throw new InvalidToken('The token is bound by a confirmation method this server does not support (only cnf.jkt, RFC 9449).');
  }
  if (scope !== undefined && typeof scope !== 'string') throw new InvalidToken('The token scope is not a string.');
  if (plan !== undefined && typeof plan !== 'string') throw new InvalidToken('The token plan is not a string.');
  return {
    clientId,
    scopes: new Set(scope ? scope.split(' ') : []),
    plan: plan ?? 'free',
    authMethod: 'bearer-jwt',
    keyId,
    ...(isRecord(cnf) ? { boundKeyThumbprint: cnf['jkt'] as string } : {}),
    tokenId: payload.jti,
    expiresAt: payload.exp as number,
  };
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** Token faults are 401 invalid_token; failing to obtain keys is ours, so 503. */
function toProblem(error: unknown): HttpProblem {
  if (error instanceof HttpProblem) return error;
  if (error instanceof errors.JWTExpired) return new InvalidToken('The token has expired.');
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.reason === 'missing') return new InvalidToken(`The token has no "${error.claim}" claim, which RFC 9068 requires.`);
    switch (error.claim) {
      case 'nbf':
        return new InvalidToken('The token is not yet valid.');
      case 'iat':
      case 'exp':
        return new InvalidToken(`The token claim "${error.claim}" is not a NumericDate.`);
      case 'iss':
        return new InvalidToken('The token was issued by another issuer.');
      case 'aud':
        return new InvalidToken('The token is for another audience.');
      case 'typ':
        return new InvalidToken('The token is not an RFC 9068 access token (typ must be at+jwt).');
      default:
        return new InvalidToken(`The token claim "${error.claim}" is missing or invalid.`);
    }
  }
  if (error instanceof errors.JOSEAlgNotAllowed) return new InvalidToken('The token signing algorithm is not accepted.');
  if (error instanceof errors.JWKSNoMatchingKey) return new InvalidToken('The token was signed by an unknown key.');
  if (error instanceof errors.JWSSignatureVerificationFailed) return new InvalidToken('The token signature is invalid.');
  if (error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid) return new KeysUnavailable(5);
  if (error instanceof errors.JOSEError) return new InvalidToken('The token is malformed.');
  // fetch() failures surface as TypeError: the key server is unreachable.
  return new KeysUnavailable(5);
}
