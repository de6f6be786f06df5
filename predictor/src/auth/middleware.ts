import { createMiddleware } from 'hono/factory';
import { InsufficientScope, MissingCredentials } from '../http/problems.js';
import type { AppEnv } from '../http/app-env.js';
import { bearerTokenFrom } from './authorization-header.js';
import type { TokenVerifier } from './token-verifier.js';

/** Resolves the caller into `c.var.principal`, or throws 400/401/503 problems. */
export function authenticate(verifyToken: TokenVerifier) {
  return createMiddleware<AppEnv>(async function authenticateCaller(c, next) {
    const token = bearerTokenFrom(c.req.header('authorization'));
    if (token === undefined) throw new MissingCredentials();
    c.set('principal', await verifyToken(token));
    await next();
  });
}

/** 403 insufficient_scope unless the principal holds `scope`. */
export function requireScope(scope: string) {
  return createMiddleware<AppEnv>(async function checkScope(c, next) {
    if (!c.var.principal?.scopes.has(scope)) throw new InsufficientScope(scope);
    await next();
  });
}
