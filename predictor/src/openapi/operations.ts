import { describeRoute, resolver, type DescribeRouteOptions } from 'hono-openapi';
import type { MiddlewareHandler } from 'hono';
import type { ZodType } from 'zod';
import { ROUTE_SCOPES } from '../auth/scopes.js';
import {
  InsufficientScopeProblemSchema,
  NotReadyProblemSchema,
  PayloadTooLargeProblemSchema,
  ProblemSchema,
  RateLimitedProblemSchema,
  ValidationProblemSchema,
} from '../http/problem-schema.js';
import { MAX_IDEMPOTENCY_KEY_LENGTH } from '../idempotency/fingerprint.js';
import { MAX_FEATURE_MAGNITUDE, MAX_ROWS, PredictRequestSchema } from '../predict/request-schema.js';
import { PredictResponseSchema } from '../predict/response-schema.js';
import { HealthSchema, ModelListSchema, ProtectedResourceMetadataSchema, ReadinessSchema } from './response-schemas.js';
import { componentRef, SECURITY_SCHEMES } from './components.js';

/**
 * What each route answers, as `describeRoute` middleware placed first on the route in app.ts:
 * it does nothing at request time (it calls `next()`), and document.ts collects it from the
 * route table, so a route without its description is missing from /openapi.json (a test
 * compares the two). Every status a route can answer is listed, problems as
 * application/problem+json; 404 and 405 (any path, any other method) are components.responses.
 */

export interface OperationDocsOptions {
  /** X-API-Key is accepted (PredictorDeps.verifyApiKey). */
  apiKeys: boolean;
  /** Authorization: DPoP is accepted (PredictorDeps.dpop). */
  dpop: boolean;
  /** POST /v1/predict without Idempotency-Key is refused (400). */
  requireIdempotencyKey: boolean;
  /** Largest accepted request body (in bytes). */
  bodyLimitBytes: number;
}

export interface OperationDocs {
  healthz: MiddlewareHandler;
  readyz: MiddlewareHandler;
  resourceMetadata: MiddlewareHandler;
  listModels: MiddlewareHandler;
  predict: MiddlewareHandler;
  openApiDocument: MiddlewareHandler;
  apiReference: MiddlewareHandler;
}

type Response = NonNullable<DescribeRouteOptions['responses']>[string];
type Headers = Record<string, { $ref: string }>;

const headers = (...names: string[]): Headers => Object.fromEntries(['X-Request-Id', ...names].map((name) => [name, componentRef('headers', name)]));
const RATE_LIMIT_HEADERS = ['RateLimit', 'RateLimit-Policy', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset'];

function json(description: string, schema: ZodType, headerNames: string[] = []): Response {
  return { description, headers: headers(...headerNames), content: { 'application/json': { schema: resolver(schema) } } };
}

function problem(description: string, schema: ZodType = ProblemSchema, headerNames: string[] = []): Response {
  return { description, headers: headers(...headerNames), content: { 'application/problem+json': { schema: resolver(schema) } } };
}

const slugs = (...names: string[]) => names.map((name) => `\`${name}\``).join(', ');

export function operationDocs(options: OperationDocsOptions): OperationDocs {
  /** Any accepted credential with the scope; for DPoP and the API key the scope is the token's or the key's. */
  const security = (scope: string): Record<string, string[]>[] => [
    { [SECURITY_SCHEMES.oauth2]: [scope] },
    ...(options.dpop ? [{ [SECURITY_SCHEMES.dpop]: [scope] }] : []),
    ...(options.apiKeys ? [{ [SECURITY_SCHEMES.apiKey]: [scope] }] : []),
  ];
  const schemes = `Bearer${options.dpop ? ' or DPoP' : ''}`;
  const credentials = `${schemes} access token${options.apiKeys ? ' or `X-API-Key`' : ''}`;

  /** The answers of an authenticated route before its own work: authentication, scope, rate limit, outages. */
  const authenticated = (scope: string): Record<string, Response> => ({
    400: problem(
      `Malformed credentials (${slugs('invalid-request')}: \`Authorization\` with no token, extra parts or sent twice${options.apiKeys ? ', or a token and an `X-API-Key` together' : ''}), with \`WWW-Authenticate: … error="invalid_request"\`.`,
      ProblemSchema,
      ['WWW-Authenticate', ...RATE_LIMIT_HEADERS],
    ),
    401: problem(
      `No usable credentials: none or of another scheme (${slugs('missing-credentials', 'unsupported-authentication-scheme')}, a challenge per accepted scheme with no error code), ` +
        `an invalid, expired or foreign token${options.apiKeys ? ' or API key' : ''} (${slugs('invalid-token')}, \`error="invalid_token"\`)` +
        (options.dpop ? `, a missing or failing DPoP proof (${slugs('invalid-dpop-proof')}), or a proof without the current nonce (${slugs('use-dpop-nonce')}, with \`DPoP-Nonce\`)` : '') +
        '. Never charged.',
      ProblemSchema,
      ['WWW-Authenticate', 'DPoP-Nonce'],
    ),
    403: problem(`The credentials lack the scope \`${scope}\` (${slugs('insufficient-scope')}, \`error="insufficient_scope", scope="${scope}"\`). Never charged.`, InsufficientScopeProblemSchema, [
      'WWW-Authenticate',
      ...RATE_LIMIT_HEADERS,
    ]),
    429: problem(`The plan's burst or daily quota is exhausted (${slugs('rate-limited')}); \`violated_policy\` names which, \`Retry-After\` when to retry.`, RateLimitedProblemSchema, [
      'Retry-After',
      ...RATE_LIMIT_HEADERS,
    ]),
    500: componentRef('responses', 'InternalError'),
    503: problem(
      `Temporarily unable to serve, never a 401: the issuer's signing keys cannot be obtained (${slugs('keys-unavailable')}) or a store is down under \`fail-closed\` (${slugs('store-unavailable')}). Retry after \`Retry-After\`.`,
      ProblemSchema,
      ['Retry-After', ...RATE_LIMIT_HEADERS],
    ),
  });

  return {
    healthz: describeRoute({
      tags: ['operations'],
      summary: 'Liveness',
      description: 'Answers while the process lives. `HEAD` works too (as on every `GET` route).',
      responses: { 200: json('The process is alive.', HealthSchema), 500: componentRef('responses', 'InternalError') },
    }),
    readyz: describeRoute({
      tags: ['operations'],
      summary: 'Readiness',
      description: "503 until the issuer's signing keys have been fetched and while the idempotency store is unusable.",
      responses: {
        200: json('Ready to serve (`degraded`: serving from a failure policy).', ReadinessSchema),
        500: componentRef('responses', 'InternalError'),
        503: problem(`Not ready (${slugs('not-ready')}); \`stores\` tells each store's state.`, NotReadyProblemSchema, ['Retry-After']),
      },
    }),
    resourceMetadata: describeRoute({
      tags: ['discovery'],
      summary: 'OAuth 2.0 protected resource metadata (RFC 9728)',
      description: 'The audience to request tokens for, the issuers, the scopes and the accepted DPoP algorithms. Named in every `WWW-Authenticate` challenge (`resource_metadata`).',
      responses: { 200: json('The metadata (cacheable for 300 s).', ProtectedResourceMetadataSchema, ['Cache-Control']), 500: componentRef('responses', 'InternalError') },
    }),
    listModels: describeRoute({
      tags: ['inference'],
      summary: 'The model served',
      description: `Needs the scope \`${ROUTE_SCOPES.listModels}\` (${credentials}). Charged against the plan like a prediction.`,
      security: security(ROUTE_SCOPES.listModels),
      parameters: [componentRef('parameters', 'X-Request-Id')],
      responses: { 200: json('The model, its input features in order, its labels and its training summary.', ModelListSchema, RATE_LIMIT_HEADERS), ...authenticated(ROUTE_SCOPES.listModels) },
    }),
    predict: describeRoute({
      tags: ['inference'],
      summary: 'Classify Iris flowers',
      description:
        `Needs the scope \`${ROUTE_SCOPES.predict}\` (${credentials}). 1 to ${MAX_ROWS} rows of the four features in centimetres, each within ±${MAX_FEATURE_MAGNITUDE}.\n\n` +
        'Checks in this order: authentication → scope → body limit → `Idempotency-Key` format → JSON and schema → idempotency claim → rate limit → model. ' +
        'So 401 and 403 never consume quota, validation failures are not charged and leave the key unused, replays and 409s are free, and a 429 releases the key.',
      security: security(ROUTE_SCOPES.predict),
      parameters: [componentRef('parameters', 'Idempotency-Key'), componentRef('parameters', 'X-Request-Id')],
      requestBody: { required: true, content: { 'application/json': { schema: resolver(PredictRequestSchema) } } },
      responses: {
        200: json('One prediction per row, in order. With an `Idempotency-Key` already completed: the stored answer, byte-identical, with `Idempotent-Replayed: true`, not charged.', PredictResponseSchema, [
          'Idempotent-Replayed',
          ...RATE_LIMIT_HEADERS,
        ]),
        ...authenticated(ROUTE_SCOPES.predict),
        400: problem(
          `Malformed credentials (${slugs('invalid-request')}, with \`WWW-Authenticate\`), an \`Idempotency-Key\` that is not 1–${MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters (${slugs('invalid-idempotency-key')}), ` +
            `sent in two header lines (${slugs('idempotency-key-repeated')})${options.requireIdempotencyKey ? ` or missing (${slugs('idempotency-key-required')})` : ''}, ` +
            `malformed JSON (${slugs('malformed-json')}), or a body cut off by the client (${slugs('incomplete-body')}). Nothing executed, nothing charged.`,
          ProblemSchema,
          ['WWW-Authenticate', ...RATE_LIMIT_HEADERS],
        ),
        409: problem(`A request with this \`Idempotency-Key\` and the same body is still executing (${slugs('idempotency-key-in-flight')}); retry with the same key after \`Retry-After\`.`, ProblemSchema, [
          'Retry-After',
          ...RATE_LIMIT_HEADERS,
        ]),
        413: problem(`The body exceeds ${options.bodyLimitBytes} bytes (${slugs('payload-too-large')}), declared or chunked; refused before it is parsed.`, PayloadTooLargeProblemSchema, RATE_LIMIT_HEADERS),
        415: problem(`The body is not declared as \`application/json\` (${slugs('unsupported-media-type')}).`, ProblemSchema, RATE_LIMIT_HEADERS),
        422: problem(
          `The body does not match the schema (${slugs('validation-failed')}: \`errors\` has a JSON Pointer to every failing field, e.g. \`/inputs/0/3\`), ` +
            `or the \`Idempotency-Key\` was used for a different request (${slugs('idempotency-key-reused')}).`,
          ValidationProblemSchema,
          RATE_LIMIT_HEADERS,
        ),
        503: problem(
          `Temporarily unable to serve, never a 401: the signing keys cannot be obtained (${slugs('keys-unavailable')}), a store is down under \`fail-closed\` or the result could not be stored (${slugs('store-unavailable')}), ` +
            `or another attempt with the same key took over (${slugs('idempotency-lease-lost')}); the unstored result is never sent. Retry with the same key after \`Retry-After\`.`,
          ProblemSchema,
          ['Retry-After', ...RATE_LIMIT_HEADERS],
        ),
      },
    }),
    openApiDocument: describeRoute({
      tags: ['discovery'],
      summary: 'This OpenAPI 3.1 document',
      responses: { 200: { description: 'The document.', headers: headers(), content: { 'application/json': { schema: { type: 'object' } } } }, 500: componentRef('responses', 'InternalError') },
    }),
    apiReference: describeRoute({
      tags: ['discovery'],
      summary: 'Interactive API reference',
      description: 'A page rendering this document; everything it loads is served by the predictor (no CDN).',
      responses: { 200: { description: 'The page.', headers: headers(), content: { 'text/html': { schema: { type: 'string' } } } }, 500: componentRef('responses', 'InternalError') },
    }),
  };
}
