import committedWeights from './iris-softmax.weights.json' with { type: 'json' };
import { createIrisModel, type IrisModel } from './iris-softmax.js';

export { createIrisModel, NonFiniteLogits, type IrisModel, type Prediction } from './iris-softmax.js';

/** The committed model (trained by scripts/train.ts); no training dependency at serving time. */
export function loadIrisModel(): IrisModel {
  return createIrisModel(committedWeights);
}
