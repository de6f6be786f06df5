import type { IncomingMessage } from 'node:http';
import type { Principal } from '../auth/principal.js';
import type { AuthScheme } from './problems.js';
import type { IdempotencyOutcome } from '../idempotency/execute-once.js';
import type { RateLimitDecision } from '../limits/rate-limiter.js';

/** Hono context variables shared by the middleware. */
export interface AppEnv {
  /** @hono/node-server passes the Node request; absent under `app.request()` and other runtimes. */
  Bindings: { incoming?: Pick<IncomingMessage, 'rawHeaders'> } | undefined;
  Variables: {
    requestId: string;
    principal: Principal | undefined;
    /** The scheme of the request's Authorization (Bearer or DPoP): where a challenge puts its error. */
    authScheme: AuthScheme | undefined;
    /** The charged decision, when the request was charged. */
    rateLimit: RateLimitDecision | undefined;
    idempotency: IdempotencyOutcome | undefined;
  };
}
