import type { Context } from 'hono';
import type { IrisModel } from '../model/index.js';
import { readJsonBody } from '../http/json-body.js';
import { parsePredictRequest } from './request-schema.js';

export interface PredictHandlerDeps {
  model: IrisModel;
  /** Milliseconds since the epoch. */
  now: () => number;
  /** Unique id of one executed prediction, so that a replay is recognisable. */
  newPredictionId: () => string;
}

export function predictHandler(deps: PredictHandlerDeps) {
  return async function predict(c: Context) {
    const request = parsePredictRequest(await readJsonBody(c));
    const predictions = deps.model.predict(request.inputs);
    return c.json({
      id: deps.newPredictionId(),
      model: deps.model.id,
      created: Math.floor(deps.now() / 1000),
      predictions,
    });
  };
}
