import type { Principal } from '../auth/principal.js';

/** Hono context variables shared by the middleware. */
export interface AppEnv {
  Variables: {
    requestId: string;
    principal: Principal | undefined;
  };
}
