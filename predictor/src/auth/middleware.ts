import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import { InsufficientScope, InvalidAuthorizationRequest, InvalidDpopProof, InvalidToken, MissingCredentials, StoreUnavailable, UnsupportedAuthScheme } from '../http/problems.js';
import type { AppEnv } from '../http/app-env.js';
import { fieldLineCount } from '../http/field-lines.js';
import { InvalidApiKey, type ApiKeyVerifier } from './api-keys.js';
import { credentialsFrom, type AccessTokenCredentials } from './authorization-header.js';
import type { DpopProofVerifier } from './dpop/proof.js';
import type { Principal } from './principal.js';
import type { TokenVerifier } from './token-verifier.js';

export interface Authenticators {
  verifyToken: TokenVerifier;
  /** Absent: X-API-Key is not accepted. */
  verifyApiKey?: ApiKeyVerifier | undefined;
  /** Absent: the DPoP scheme is not accepted (and DPoP-bound tokens are refused). */
  verifyDpopProof?: DpopProofVerifier | undefined;
}

/** Resolves the caller (access token or X-API-Key) into the `principal` variable, or throws 400/401/503 problems. */
export function authenticate(authenticators: Authenticators) {
  return createMiddleware<AppEnv>(async function authenticateCaller(c, next) {
    const credentials = credentialsFrom(c.req.header('authorization'));
    if (credentials) c.set('authScheme', credentials.scheme);
    const apiKey = authenticators.verifyApiKey ? c.req.header('x-api-key') : undefined;
    if (credentials !== undefined && apiKey !== undefined) {
      throw new InvalidAuthorizationRequest('Send either an access token or an API key, not both.');
    }
    if (credentials !== undefined) {
      if (credentials.scheme === 'DPoP' && !authenticators.verifyDpopProof) throw new UnsupportedAuthScheme('DPoP');
      // The token first: only the proofs of valid tokens take room in the replay cache.
      const principal = await authenticators.verifyToken(credentials.token);
      c.set('principal', await checkSenderConstraint(c, credentials, principal, authenticators.verifyDpopProof));
    } else if (apiKey !== undefined) c.set('principal', await verifyApiKey(authenticators.verifyApiKey!, apiKey));
    else throw new MissingCredentials();
    await next();
  });
}

/**
 * RFC 9449 section 7: a DPoP-bound token (`cnf.jkt`) only under the DPoP scheme, with a proof
 * of its key made for this request, checked on every request (the token verifier's cache
 * holds the token's claims, never a proof); a token without `cnf.jkt` only as Bearer.
 */
async function checkSenderConstraint(c: Context<AppEnv>, credentials: AccessTokenCredentials, principal: Principal, verifyProof: DpopProofVerifier | undefined): Promise<Principal> {
  const bound = principal.boundKeyThumbprint;
  if (credentials.scheme === 'Bearer') {
    if (bound !== undefined) throw new InvalidToken('This token is DPoP-bound: send it as Authorization: DPoP <token> with a DPoP proof of its key.');
    return principal;
  }
  if (bound === undefined) throw new InvalidToken('This token is not DPoP-bound (no cnf.jkt): send it as Authorization: Bearer <token>.', { scheme: 'DPoP' });
  // Node joins repeated fields with ", "; RFC 9449 section 4.3 allows exactly one DPoP field.
  if ((fieldLineCount(c, 'dpop') ?? 1) > 1) throw new InvalidDpopProof('Send one DPoP header field; this request has several.');
  const proof = c.req.header('dpop');
  if (!proof) throw new InvalidDpopProof('A DPoP-bound token needs a DPoP proof in the DPoP header.');
  const verified = await verifyProof!({ proof, method: c.req.method, path: c.req.path, accessToken: credentials.token, boundThumbprint: bound });
  if (verified.nextNonce) c.header('dpop-nonce', verified.nextNonce);
  return principal;
}

async function verifyApiKey(verify: ApiKeyVerifier, apiKey: string) {
  try {
    return await verify(apiKey);
  } catch (error) {
    if (error instanceof InvalidApiKey) throw new InvalidToken(error.message);
    throw new StoreUnavailable('API key', { cause: error });
  }
}

/** 403 insufficient_scope unless the principal holds `scope`. */
export function requireScope(scope: string) {
  return createMiddleware<AppEnv>(async function checkScope(c, next) {
    if (!c.get('principal')?.scopes.has(scope)) throw new InsufficientScope(scope);
    await next();
  });
}
