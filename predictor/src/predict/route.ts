import { setTimeout as sleep } from 'node:timers/promises';
import { USAGE_EVENT_TYPE, type Logger, type UsageEvent } from '@m2m/common';
import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { AppEnv } from '../http/app-env.js';
import { readJsonBody } from '../http/json-body.js';
import type { Metrics } from '../http/metrics.js';
import { fieldLineCount } from '../http/field-lines.js';
import { HttpProblem, IdempotencyKeyRequired, InvalidIdempotencyKey, RepeatedIdempotencyKey, StoreUnavailable, ValidationFailed } from '../http/problems.js';
import { executeOnce, type Execution } from '../idempotency/execute-once.js';
import { fingerprint, parseIdempotencyKeyHeader } from '../idempotency/fingerprint.js';
import type { IdempotencyStore, StoredResponse } from '../idempotency/store.js';
import { chargeRateLimit, type RateLimitDeps } from '../limits/middleware.js';
import { NonFiniteLogits, type IrisModel } from '../model/index.js';
import { parsePredictRequest, type PredictRequest } from './request-schema.js';
import type { PredictResponse } from './response-schema.js';

export interface PredictHandlerDeps extends RateLimitDeps {
  model: IrisModel;
  idempotencyStore: IdempotencyStore;
  logger: Logger;
  /** Largest accepted request body (in bytes). */
  bodyLimitBytes: number;
  /** Refuse a POST without Idempotency-Key (400). */
  requireIdempotencyKey: boolean;
  metrics: Metrics;
  /** Milliseconds since the epoch. */
  now: () => number;
  /** Unique id of one executed prediction, so that a replay is recognisable. */
  /** The id of a prediction executed at `now` (ms): its time is the response's `created` and the event's `occurredAt`. */
  newPredictionId: (now: number) => string;
  /** Extra time each execution takes (ms), for rehearsals; 0 in normal use. */
  simulatedInferenceMs: number;
}

/**
 * POST /v1/predict. Order matters: the request is validated before anything is
 * claimed or charged, a replay is answered before the rate limit (replays are free),
 * and the model runs only for the holder of the claim.
 */
export function predictHandler(deps: PredictHandlerDeps) {
  const run = async (c: Context<AppEnv>, request: PredictRequest, key: string | undefined): Promise<Execution> => {
    await chargeRateLimit(c, deps);
    if (deps.simulatedInferenceMs > 0) await sleep(deps.simulatedInferenceMs);
    const predictions = predictWithinRange(deps.model, request.inputs);
    deps.metrics.predictions.inc();
    const now = deps.now();
    const id = deps.newPredictionId(now);
    const body = JSON.stringify({ id, model: deps.model.id, created: Math.floor(now / 1000), predictions } satisfies PredictResponse);
    const principal = c.get('principal')!;
    const usage: UsageEvent = {
      id,
      type: USAGE_EVENT_TYPE,
      clientId: principal.clientId,
      plan: principal.plan,
      credential: { method: principal.authMethod, id: principal.authMethod === 'api-key' ? principal.tokenId : principal.keyId },
      rows: request.inputs.length,
      modelId: deps.model.id,
      idempotencyKey: key,
      occurredAt: new Date(now).toISOString(),
    };
    return { response: { status: 200, headers: { 'content-type': JSON_CONTENT_TYPE }, body }, usage };
  };

  /** Without a key: metered in a transaction of its own before the answer goes out, or refused with 503 (never sent unmetered). */
  const runMetered = async (c: Context<AppEnv>, request: PredictRequest): Promise<StoredResponse> => {
    const { response, usage } = await run(c, request, undefined);
    await deps.idempotencyStore.append(usage!).catch((error: unknown) => {
      throw error instanceof HttpProblem ? error : new StoreUnavailable('usage', { cause: error });
    });
    return response;
  };

  return async function predict(c: Context<AppEnv>) {
    const fieldLines = fieldLineCount(c, 'idempotency-key') ?? 0;
    if (fieldLines > 1) throw new RepeatedIdempotencyKey(fieldLines);
    const header = c.req.header('idempotency-key');
    const key = header === undefined ? undefined : parseIdempotencyKeyHeader(header);
    if (header !== undefined && key === undefined) throw new InvalidIdempotencyKey();
    if (key === undefined && deps.requireIdempotencyKey) throw new IdempotencyKeyRequired();
    const request = parsePredictRequest(await readJsonBody(c, deps.bodyLimitBytes));
    if (key === undefined) return send(c, await runMetered(c, request));
    const { response, replayed } = await executeOnce(
      {
        store: deps.idempotencyStore,
        metrics: deps.metrics,
        logger: deps.logger,
        onOutcome: (outcome) => c.set('idempotency', outcome),
      },
      { clientId: c.get('principal')!.clientId, key, fingerprint: fingerprint('POST', '/v1/predict', JSON.stringify(request)) },
      () => run(c, request, key),
    );
    if (replayed) c.header('Idempotent-Replayed', 'true');
    return send(c, response);
  };
}

const JSON_CONTENT_TYPE = 'application/json';

/** A row the model cannot score (a logit overflows) is the request's fault: 422 naming the row, never probabilities of null. */
function predictWithinRange(model: IrisModel, inputs: PredictRequest['inputs']) {
  try {
    return model.predict(inputs);
  } catch (error) {
    if (error instanceof NonFiniteLogits) throw new ValidationFailed([{ pointer: `/inputs/${error.row}`, detail: 'the features are too large for the model' }]);
    throw error;
  }
}

/** Through the context, so the headers set earlier (request id, rate limits) go with it. */
function send(c: Context<AppEnv>, response: StoredResponse): Response {
  for (const [name, value] of Object.entries(response.headers)) c.header(name, value);
  return c.body(response.body, response.status as ContentfulStatusCode);
}
