import type { Hono } from 'hono';
import { generateSpecs } from 'hono-openapi';
import { components, type ComponentOptions } from './components.js';

/**
 * The OpenAPI 3.1 document served at /openapi.json, generated from the route table and the
 * zod schemas the code validates with (predict/request-schema.ts) or answers with.
 *
 * Why hono-openapi and not @hono/zod-openapi: both support zod 4 (installed: 4.x), but
 * @hono/zod-openapi documents a route by validating it (`app.openapi(route, handler)` puts
 * its own zod validator before the handler), which would move schema validation ahead of
 * the body limit and the Idempotency-Key checks, read the body through hono's parser and
 * answer with its own error shape instead of our 413/415/400 and 422 problems with JSON
 * Pointers. hono-openapi's `describeRoute` only describes (a middleware that calls `next()`),
 * and `resolver(schema)` turns the very same zod schema into JSON Schema (zod's own
 * toJSONSchema, draft 2020-12, which OpenAPI 3.1 uses), so validation stays exactly as it was.
 */

export interface OpenApiDocumentOptions extends ComponentOptions {
  /** The predictor's public URL (PREDICTOR_PUBLIC_URL); not a `servers` entry: the document is relative to where it is served. */
  publicUrl?: string | undefined;
}

/** The document of `app` (the routes carrying a `describeRoute` from operations.ts), as JSON text. */
export async function openApiDocument(app: Hono<any>, options: OpenApiDocumentOptions): Promise<string> {
  const document = await generateSpecs(app, {
    documentation: {
      info: {
        title: 'Predictor API',
        // The API's version is its path prefix (/v1); additions keep it, a breaking change makes /v2.
        version: '1',
        description:
          'An Iris classifier behind OAuth 2.0 client credentials. Errors are RFC 9457 problems (`application/problem+json`, `type` = `urn:m2m-inference:problem:<slug>`); ' +
          'every response carries `X-Request-Id`. Any path not listed answers 404 (`#/components/responses/NotFound`); a listed path with another method answers 405 with `Allow` ' +
          '(`#/components/responses/MethodNotAllowed`); `HEAD` works wherever `GET` does. Rate limits: each client\'s plan sets a burst and a daily quota, shown in the `RateLimit`, ' +
          '`RateLimit-Policy` and `X-RateLimit-*` headers; a 429 says when to retry in `Retry-After`.',
      },
      tags: [
        { name: 'inference', description: 'Authenticated, scoped and rate-limited.' },
        { name: 'operations', description: 'Liveness and readiness, for orchestrators.' },
        { name: 'discovery', description: 'Public descriptions of the API; no data.' },
      ],
      // A relative server: "try it" calls the origin that served the page, whatever the proxy in front.
      servers: [{ url: '/', description: options.publicUrl ? `This predictor (public URL ${options.publicUrl})` : 'This predictor' }],
      components: components(options),
    },
    // HEAD is answered from GET (hono); listing it would double every GET.
    excludeMethods: ['OPTIONS', 'HEAD'],
    // Only described routes are listed anyway; this keeps /openapi.json, whose name has a dot.
    excludeStaticFile: false,
  });
  return JSON.stringify(document);
}
