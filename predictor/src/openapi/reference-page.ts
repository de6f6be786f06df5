import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Context } from 'hono';
import { NotFound } from '../http/problems.js';

/**
 * The interactive reference page at /docs: Swagger UI rendering /openapi.json, with every file
 * it loads served by the predictor from node_modules (swagger-ui-dist), so it works where no CDN
 * can be reached (air-gapped deployments). A Content-Security-Policy holds the page to that.
 *
 * Why swagger-ui-dist and not Scalar or Redoc: it is the prebuilt bundle alone (12 MB, one
 * dependency), while @scalar/api-reference and redoc bring their whole toolchains as runtime
 * dependencies (Scalar: about 300 packages, 260 MB) into the runtime image, and
 * @scalar/hono-api-reference loads Scalar from a CDN by default. Swagger UI renders OpenAPI
 * 3.1 and can call the API ("Try it out", with the OAuth 2.0 client credentials flow).
 */

/** Where the page is; its assets are under `${REFERENCE_PAGE_PATH}/assets/`, the document beside it. */
export const REFERENCE_PAGE_PATH = '/docs';

/** The files of swagger-ui-dist the page loads, with their media types; nothing else is served. */
const SWAGGER_UI_FILES: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
};

export interface ReferencePageOptions {
  /** The document's path relative to the page's (`openapi.json` beside `/docs`). */
  documentUrl: string;
  /** Origins besides the predictor's that the page may call: the token endpoint's, for "Authorize". */
  connectOrigins: string[];
}

/**
 * The handlers of the page and its assets. swagger-ui-dist is resolved now, so a runtime image
 * without it fails at startup rather than at the first visit.
 */
export function referencePage(options: ReferencePageOptions) {
  // From this module (under tsx) or its bundle in dist/ (the image): node_modules is found above either.
  const swaggerUiDir = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  const cache = new Map<string, Promise<Buffer>>();
  const read = (file: string) => {
    let contents = cache.get(file);
    if (!contents) {
      contents = file === INITIALIZER ? Promise.resolve(Buffer.from(initializer(options.documentUrl))) : readFile(join(swaggerUiDir, file));
      contents.catch(() => cache.delete(file));
      cache.set(file, contents);
    }
    return contents;
  };
  const page = Buffer.from(html());
  const contentSecurityPolicy = [
    "default-src 'none'",
    "script-src 'self'",
    // Swagger UI (React) sets style attributes.
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    `connect-src 'self' ${options.connectOrigins.join(' ')}`.trim(),
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');

  return {
    page: function referencePageHtml(c: Context) {
      return c.body(page, 200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': contentSecurityPolicy, 'cache-control': 'no-cache' });
    },
    asset: async function referencePageAsset(c: Context) {
      const file = c.req.param('file') ?? '';
      const type = file === INITIALIZER ? 'text/javascript; charset=utf-8' : SWAGGER_UI_FILES[file];
      if (!type) throw new NotFound(c.req.path);
      return c.body(new Uint8Array(await read(file)), 200, { 'content-type': type, 'cache-control': 'public, max-age=3600', 'x-content-type-options': 'nosniff' });
    },
  };
}

/** Our start script: served as a file, since the policy allows no inline script. */
const INITIALIZER = 'init.js';

// Relative URLs throughout: the page keeps working behind a proxy that mounts the predictor under a path.
function html(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Predictor API reference</title>
<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/assets/${INITIALIZER}"></script>
</body>
</html>
`;
}

function initializer(documentUrl: string): string {
  return `// The predictor's reference page: the document beside the page, nothing from elsewhere.
window.ui = SwaggerUIBundle({
  url: new URL(${JSON.stringify(documentUrl)}, document.baseURI).href,
  dom_id: '#swagger-ui',
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
  // No online validator badge (it would call validator.swagger.io).
  validatorUrl: null,
  showExtensions: true,
  showCommonExtensions: true,
});
`;
}
