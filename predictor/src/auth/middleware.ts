import { createMiddleware } from 'hono/factory';
import { InsufficientScope, InvalidAuthorizationRequest, InvalidToken, MissingCredentials, StoreUnavailable } from '../http/problems.js';
import type { AppEnv } from '../http/app-env.js';
import { InvalidApiKey, type ApiKeyVerifier } from './api-keys.js';
import { bearerTokenFrom } from './authorization-header.js';
import type { TokenVerifier } from './token-verifier.js';

export interface Authenticators {
  verifyToken: TokenVerifier;
  /** Absent: X-API-Key is not accepted. */
  verifyApiKey?: ApiKeyVerifier | undefined;
}

/** Resolves the caller (bearer token or X-API-Key) into the `principal` variable, or throws 400/401/503 problems. */
export function authenticate(authenticators: Authenticators) {
  return createMiddleware<AppEnv>(async function authenticateCaller(c, next) {
    const token = bearerTokenFrom(c.req.header('authorization'));
    const apiKey = authenticators.verifyApiKey ? c.req.header('x-api-key') : undefined;
    if (token !== undefined && apiKey !== undefined) {
      throw new InvalidAuthorizationRequest('Send either a bearer token or an API key, not both.');
    }
    if (token !== undefined) c.set('principal', await authenticators.verifyToken(token));
    else if (apiKey !== undefined) c.set('principal', await verifyApiKey(authenticators.verifyApiKey!, apiKey));
    else throw new MissingCredentials();
    await next();
  });
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
