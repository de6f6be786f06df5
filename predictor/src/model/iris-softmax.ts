// Serving side of the Iris softmax classifier. Deliberately free of any
// training dependency: it only needs the committed weights JSON.

export interface IrisTrainingSummary {
  readonly rows: number;
  readonly epochs: number;
  readonly learningRate: number;
  readonly l2: number;
  readonly accuracy: number;
}

/**
 * Shape of `iris-softmax.weights.json`. `weights[k]` and `bias[k]` belong to
 * `labels[k]` and apply to standardised features: (x - mean) / std.
 */
export interface IrisModelWeights {
  readonly id: string;
  readonly features: readonly string[];
  readonly labels: readonly string[];
  readonly mean: readonly number[];
  readonly std: readonly number[];
  readonly weights: readonly (readonly number[])[];
  readonly bias: readonly number[];
  readonly training: IrisTrainingSummary;
}

export interface Prediction {
  label: string;
  probabilities: Record<string, number>;
}

export interface IrisModel {
  readonly id: string;
  readonly labels: readonly string[];
  readonly features: readonly string[];
  readonly training: IrisTrainingSummary;
  predict(rows: readonly (readonly number[])[]): Prediction[];
}

export const IRIS_FEATURE_COUNT = 4;

/**
 * A row whose features are finite but so large that a logit overflows to ±Infinity (1e308 × a
 * weight): no probability can be computed for it. The HTTP layer bounds the features first
 * (predict/request-schema.ts), so this is the model's own last line of defence.
 */
export class NonFiniteLogits extends RangeError {
  override name = 'NonFiniteLogits';
  constructor(readonly row: number) {
    super(`row ${row}: the features are too large for the model (a logit is not finite)`);
  }
}

/** Turns logits into probabilities in place; subtracting the max keeps exp() from overflowing. */
export function softmaxInPlace(values: Float64Array): void {
  let max = -Infinity;
  for (const value of values) if (value > max) max = value;
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    const exponential = Math.exp(values[i]! - max);
    values[i] = exponential;
    sum += exponential;
  }
  for (let i = 0; i < values.length; i++) values[i] = values[i]! / sum;
}

/** Index of the largest value; the first one wins a tie, so results are deterministic. */
export function argmaxIndex(values: Float64Array): number {
  let bestIndex = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[bestIndex]!) bestIndex = i;
  return bestIndex;
}

function assertFiniteVector(name: string, vector: readonly number[], expectedLength: number): void {
  if (vector.length !== expectedLength || !vector.every(Number.isFinite)) {
    throw new TypeError(`Iris model weights: "${name}" must hold ${expectedLength} finite numbers`);
  }
}

function assertWellFormed(model: IrisModelWeights): void {
  const classCount = model.labels.length;
  if (classCount < 2) throw new TypeError('Iris model weights: need at least two labels');
  if (model.features.length !== IRIS_FEATURE_COUNT) {
    throw new TypeError(`Iris model weights: expected ${IRIS_FEATURE_COUNT} features`);
  }
  assertFiniteVector('mean', model.mean, IRIS_FEATURE_COUNT);
  assertFiniteVector('std', model.std, IRIS_FEATURE_COUNT);
  if (!model.std.every((deviation) => deviation > 0)) {
    throw new TypeError('Iris model weights: "std" must be positive');
  }
  assertFiniteVector('bias', model.bias, classCount);
  if (model.weights.length !== classCount) {
    throw new TypeError(`Iris model weights: "weights" must have ${classCount} rows`);
  }
  model.weights.forEach((classWeights, k) => assertFiniteVector(`weights[${k}]`, classWeights, IRIS_FEATURE_COUNT));
}

export function createIrisModel(model: IrisModelWeights): IrisModel {
  assertWellFormed(model);
  const labels = Object.freeze([...model.labels]);
  const features = Object.freeze([...model.features]);
  const training = Object.freeze({ ...model.training });
  const classCount = labels.length;

  // Fold the standardisation into the weights once, so predicting a row is a
  // plain affine map: w·((x - mean) / std) + b  ==  (w / std)·x + (b - Σ w·mean / std).
  const rawWeights = new Float64Array(classCount * IRIS_FEATURE_COUNT);
  const rawBias = new Float64Array(classCount);
  for (let k = 0; k < classCount; k++) {
    let bias = model.bias[k]!;
    for (let j = 0; j < IRIS_FEATURE_COUNT; j++) {
      const scaled = model.weights[k]![j]! / model.std[j]!;
      rawWeights[k * IRIS_FEATURE_COUNT + j] = scaled;
      bias -= scaled * model.mean[j]!;
    }
    rawBias[k] = bias;
  }

  // Reused across calls: predict is synchronous, so no two calls can share it at once.
  const scratch = new Float64Array(classCount);

  function predict(rows: readonly (readonly number[])[]): Prediction[] {
    const predictions = new Array<Prediction>(rows.length);
    for (let r = 0; r < rows.length; r++) {
      const row = rows[r];
      // `== null` also catches a null row, which TypeScript callers cannot send but JSON can.
      if (row == null || row.length !== IRIS_FEATURE_COUNT) {
        throw new RangeError(`row ${r}: expected exactly ${IRIS_FEATURE_COUNT} finite numbers`);
      }
      for (let j = 0; j < IRIS_FEATURE_COUNT; j++) {
        const value = row[j];
        if (typeof value !== 'number' || !Number.isFinite(value)) {
          throw new RangeError(`row ${r}: feature ${j} is not a finite number`);
        }
      }

      for (let k = 0; k < classCount; k++) {
        let logit = rawBias[k]!;
        const offset = k * IRIS_FEATURE_COUNT;
        for (let j = 0; j < IRIS_FEATURE_COUNT; j++) logit += rawWeights[offset + j]! * row[j]!;
        // Infinity - Infinity in the softmax would be NaN, and JSON would carry it as null.
        if (!Number.isFinite(logit)) throw new NonFiniteLogits(r);
        scratch[k] = logit;
      }
      softmaxInPlace(scratch);

      const probabilities: Record<string, number> = {};
      for (let k = 0; k < classCount; k++) probabilities[labels[k]!] = scratch[k]!;
      predictions[r] = { label: labels[argmaxIndex(scratch)]!, probabilities };
    }
    return predictions;
  }

  return { id: model.id, labels, features, training, predict };
}
