import type { Context, NotFoundHandler } from 'hono';
import { PatternRouter } from 'hono/router/pattern-router';
import type { RouterRoute } from 'hono/types';
import { MethodNotAllowed, NotFound, renderProblem } from './problems.js';

/**
 * The answer to a request that matched no route, from the app's own route table: 405 with
 * `Allow` when the path has routes of other methods (RFC 9110 section 15.5.6), else 404; both
 * RFC 9457 problems. A GET route also allows HEAD (hono answers HEAD from it).
 */
export function answerUnmatched(routes: readonly RouterRoute[]): NotFoundHandler {
  // Built at the first miss, when every route has been added.
  let methodsOf: ((path: string) => string[]) | undefined;
  return function unmatched(c: Context) {
    methodsOf ??= routeTable(routes);
    const allowed = methodsOf(c.req.path);
    return renderProblem(c, allowed.length > 0 ? new MethodNotAllowed(allowed, c.req.path) : new NotFound(c.req.path));
  };
}

/** Path → the methods routed for it; middleware (method ALL) is not a route of its own. */
function routeTable(routes: readonly RouterRoute[]): (path: string) => string[] {
  const router = new PatternRouter<string>();
  for (const { method, path } of routes) if (method !== 'ALL') router.add('ALL', path, method);
  return (path) => {
    const methods = new Set(router.match('GET', path)[0].map(([method]) => method));
    if (methods.has('GET')) methods.add('HEAD');
    return [...methods];
  };
}
