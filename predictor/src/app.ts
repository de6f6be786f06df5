import { randomUUID } from 'node:crypto';
import { Hono } from 'hono';
import { requestId } from 'hono/request-id';
import type { Logger } from '@m2m/common';
import type { ApiKeyVerifier } from './auth/api-keys.js';
import type { DpopProofVerifier } from './auth/dpop/proof.js';
import { authenticate, requireScope } from './auth/middleware.js';
import { protectedResourceMetadata, RESOURCE_METADATA_PATH, resourceMetadataUrl, type ProtectedResourceOptions } from './auth/resource-metadata.js';
import { ROUTE_SCOPES } from './auth/scopes.js';
import type { TokenVerifier } from './auth/token-verifier.js';
import type { AppEnv } from './http/app-env.js';
import type { Metrics } from './http/metrics.js';
import { observeRequests } from './http/observe.js';
import { HttpProblem, InternalError, NotReady, renderProblem, type ChallengeOptions } from './http/problems.js';
import { answerUnmatched } from './http/unmatched.js';
import type { IdempotencyStore } from './idempotency/store.js';
import { rateLimit, rateLimitHeadersFor } from './limits/middleware.js';
import type { PlanTable } from './limits/plans.js';
import type { RateLimiter } from './limits/rate-limiter.js';
import type { IrisModel } from './model/index.js';
import { openApiDocument } from './openapi/document.js';
import { operationDocs } from './openapi/operations.js';
import { REFERENCE_PAGE_PATH, referencePage } from './openapi/reference-page.js';
import { newPredictionId } from './predict/prediction-id.js';
import { predictHandler } from './predict/route.js';

export interface Readiness {
  /** Why the predictor cannot serve now, or undefined when it can. */
  notReadyReason?: string | undefined;
  /** Each store with its engine and state, e.g. `{ rate_limiter: 'redis: down (fallback: memory)' }`. */
  stores?: Record<string, string>;
  /** True while a store's failure policy serves from this replica's memory. */
  degraded?: boolean;
  /** The usage relay: its sink, whether it delivers, and the outbox backlog. Never a reason not to serve. */
  usage?: { sink: string; up: boolean; backlog: number; oldestAgeSeconds: number | undefined };
}

export interface PredictorDeps {
  model: IrisModel;
  verifyToken: TokenVerifier;
  /** Absent: X-API-Key is not accepted. */
  verifyApiKey?: ApiKeyVerifier | undefined;
  /** DPoP (RFC 9449): the proof verifier and the `alg`s it accepts. Absent: Bearer only, DPoP-bound tokens refused. */
  dpop?: { verifyProof: DpopProofVerifier; algorithms: readonly string[] } | undefined;
  /**
   * RFC 9728: served at /.well-known/oauth-protected-resource and named in every challenge
   * (`resource_metadata`). Absent: not served. `dpopAlgorithms` comes from `dpop`.
   */
  protectedResource?: Omit<ProtectedResourceOptions, 'dpopAlgorithms'> | undefined;
  /**
   * The OpenAPI document at /openapi.json and its reference page at /docs, public like the
   * resource metadata (they describe the API, not data). The OAuth 2.0 token URL in the document
   * is `${issuer}/token`. Absent: neither is served.
   */
  apiDocs?: { issuer: string } | undefined;
  /** Whether the predictor can serve now (keys loaded, stores usable) and how its stores stand. */
  readiness: () => Promise<Readiness>;
  plans: PlanTable;
  limiter: RateLimiter;
  idempotencyStore: IdempotencyStore;
  /** Refuse POST /v1/predict without Idempotency-Key. Default false. */
  requireIdempotencyKey?: boolean;
  logger: Logger;
  metrics: Metrics;
  /** Largest accepted request body (in bytes). */
  bodyLimitBytes: number;
  /** Milliseconds since the epoch. Default `Date.now`. */
  now?: () => number;
  /** Extra time each model execution takes, to rehearse a crash mid-request or a heavier model. Default 0. */
  simulatedInferenceMs?: number;
  newPredictionId?: (now: number) => string;
}

// A client-supplied X-Request-Id is kept only if it is short and harmless in a log line.
const WELL_FORMED_REQUEST_ID = /^[\w.:@/+=-]{1,128}$/;

/** The predictor's HTTP API, with every dependency passed in: no environment, no globals. */
export function buildApp(deps: PredictorDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const limits = { limiter: deps.limiter, plans: deps.plans, metrics: deps.metrics };
  const challenges: ChallengeOptions = {
    dpopAlgorithms: deps.dpop?.algorithms,
    resourceMetadataUrl: deps.protectedResource && resourceMetadataUrl(deps.protectedResource.publicUrl),
  };

  app.use(
    requestId({
      generator: (c) => {
        const offered = c.req.header('x-request-id');
        return offered && WELL_FORMED_REQUEST_ID.test(offered) ? offered : randomUUID();
      },
    }),
  );
  app.use(observeRequests(deps.logger, deps.metrics));

  // Each route's description comes first: it only describes (openapi/operations.ts).
  const docs = operationDocs({
    apiKeys: deps.verifyApiKey !== undefined,
    dpop: deps.dpop !== undefined,
    requireIdempotencyKey: deps.requireIdempotencyKey ?? false,
    bodyLimitBytes: deps.bodyLimitBytes,
  });

  app.get('/healthz', docs.healthz, (c) => c.json({ status: 'ok' }));
  app.get('/readyz', docs.readyz, async (c) => {
    const { notReadyReason, stores, degraded, usage } = await deps.readiness();
    if (notReadyReason) throw new NotReady(notReadyReason, stores);
    return c.json({ status: degraded ? 'degraded' : 'ready', ...(stores ? { stores } : {}), ...(usage ? { usage } : {}) });
  });

  if (deps.protectedResource) {
    const metadata = JSON.stringify(protectedResourceMetadata({ ...deps.protectedResource, dpopAlgorithms: deps.dpop?.algorithms }));
    app.get(RESOURCE_METADATA_PATH, docs.resourceMetadata, (c) => c.body(metadata, 200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=300' }));
  }

  const authenticated = [
    authenticate({ verifyToken: deps.verifyToken, verifyApiKey: deps.verifyApiKey, verifyDpopProof: deps.dpop?.verifyProof }),
    rateLimitHeadersFor(limits),
  ] as const;

  app.get('/v1/models', docs.listModels, ...authenticated, requireScope(ROUTE_SCOPES.listModels), rateLimit(limits), (c) => {
    const { model } = deps;
    return c.json({
      data: [{ id: model.id, object: 'model', features: model.features, labels: model.labels, training: model.training }],
    });
  });

  app.post(
    '/v1/predict',
    docs.predict,
    ...authenticated,
    requireScope(ROUTE_SCOPES.predict),
    predictHandler({
      bodyLimitBytes: deps.bodyLimitBytes,
      ...limits,
      model: deps.model,
      idempotencyStore: deps.idempotencyStore,
      logger: deps.logger,
      requireIdempotencyKey: deps.requireIdempotencyKey ?? false,
      now: deps.now ?? Date.now,
      simulatedInferenceMs: deps.simulatedInferenceMs ?? 0,
      newPredictionId: deps.newPredictionId ?? newPredictionId,
    }),
  );

  if (deps.apiDocs) {
    const tokenUrl = `${deps.apiDocs.issuer.replace(/\/+$/, '')}/token`;
    const documentOptions = {
      tokenUrl,
      dpopAlgorithms: deps.dpop?.algorithms,
      apiKeys: deps.verifyApiKey !== undefined,
      requireIdempotencyKey: deps.requireIdempotencyKey ?? false,
      publicUrl: deps.protectedResource?.publicUrl,
    };
    // Generated at the first request, once every route is in the table; a failure is retried.
    let document: Promise<string> | undefined;
    app.get('/openapi.json', docs.openApiDocument, async (c) => {
      document ??= openApiDocument(app, documentOptions).catch((error: unknown) => {
        document = undefined;
        throw error;
      });
      return c.body(await document, 200, { 'content-type': 'application/json', 'cache-control': 'no-cache' });
    });
    const reference = referencePage({ documentUrl: 'openapi.json', connectOrigins: [new URL(tokenUrl).origin] });
    app.get(REFERENCE_PAGE_PATH, docs.apiReference, reference.page);
    app.get(`${REFERENCE_PAGE_PATH}/assets/:file`, reference.asset);
  }

  app.notFound(answerUnmatched(app.routes));
  app.onError((error, c) => {
    if (error instanceof HttpProblem) {
      if (error.status >= 500) deps.logger.warn({ requestId: c.get('requestId'), problem: error.slug, cause: (error.cause as Error | undefined)?.message }, 'service problem');
      return renderProblem(c, error, { ...challenges, usedScheme: c.get('authScheme') });
    }
    deps.logger.error({ err: error, requestId: c.get('requestId') }, 'unhandled error');
    return renderProblem(c, new InternalError());
  });
  return app;
}
