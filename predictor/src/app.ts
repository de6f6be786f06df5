import { randomUUID } from 'node:crypto';
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { requestId } from 'hono/request-id';
import type { Logger } from '@m2m/common';
import { authenticate, requireScope } from './auth/middleware.js';
import { ROUTE_SCOPES } from './auth/scopes.js';
import type { TokenVerifier } from './auth/token-verifier.js';
import type { AppEnv } from './http/app-env.js';
import { HttpProblem, InternalError, NotFound, NotReady, PayloadTooLarge, renderProblem } from './http/problems.js';
import { requestLog } from './http/request-log.js';
import type { IrisModel } from './model/index.js';
import { predictHandler } from './predict/route.js';

export interface PredictorDeps {
  model: IrisModel;
  verifyToken: TokenVerifier;
  /** Why the predictor cannot serve yet, or undefined when it can. */
  notReadyReason: () => string | undefined;
  logger: Logger;
  /** Largest accepted request body (in bytes). */
  bodyLimitBytes: number;
  /** Milliseconds since the epoch. Default `Date.now`. */
  now?: () => number;
  newPredictionId?: () => string;
}

// A client-supplied X-Request-Id is kept only if it is short and harmless in a log line.
const WELL_FORMED_REQUEST_ID = /^[\w.:@/+=-]{1,128}$/;

/** The predictor's HTTP API, with every dependency passed in: no environment, no globals. */
export function buildApp(deps: PredictorDeps): Hono<AppEnv> {
  const now = deps.now ?? Date.now;
  const app = new Hono<AppEnv>();

  app.use(
    requestId({
      generator: (c) => {
        const offered = c.req.header('x-request-id');
        return offered && WELL_FORMED_REQUEST_ID.test(offered) ? offered : randomUUID();
      },
    }),
  );
  app.use(requestLog(deps.logger, () => performance.now()));

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', (c) => {
    const reason = deps.notReadyReason();
    if (reason) throw new NotReady(reason);
    return c.json({ status: 'ready' });
  });

  const authenticated = authenticate(deps.verifyToken);

  app.get('/v1/models', authenticated, requireScope(ROUTE_SCOPES.listModels), (c) => {
    const { model } = deps;
    return c.json({
      data: [{ id: model.id, object: 'model', features: model.features, labels: model.labels, training: model.training }],
    });
  });

  app.post(
    '/v1/predict',
    authenticated,
    requireScope(ROUTE_SCOPES.predict),
    bodyLimit({ maxSize: deps.bodyLimitBytes, onError: (c) => renderProblem(c, new PayloadTooLarge(deps.bodyLimitBytes)) }),
    predictHandler({ model: deps.model, now, newPredictionId: deps.newPredictionId ?? (() => `pred_${randomUUID()}`) }),
  );

  app.notFound((c) => renderProblem(c, new NotFound(c.req.path)));
  app.onError((error, c) => {
    if (error instanceof HttpProblem) return renderProblem(c, error);
    deps.logger.error({ err: error, requestId: c.var.requestId }, 'unhandled error');
    return renderProblem(c, new InternalError());
  });
  return app;
}
