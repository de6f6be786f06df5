import { z } from 'zod';

/** One row's answer: the most probable label and every label's probability (they sum to 1). */
export const PredictionSchema = z
  .object({
    label: z.string(),
    probabilities: z.record(z.string(), z.number().min(0).max(1)),
  })
  .meta({ ref: 'Prediction' });

/** The 200 answer of POST /v1/predict: one prediction per input row, in order. A replay is byte-identical. */
export const PredictResponseSchema = z
  .object({
    id: z.string().describe('Unique per executed prediction: a replay (Idempotent-Replayed: true) carries the original id.'),
    model: z.string(),
    created: z.int().min(0).describe('When the prediction was executed (seconds since the epoch).'),
    predictions: z.array(PredictionSchema),
  })
  .meta({ ref: 'PredictResponse', examples: [{ id: 'pred_7c1e…', model: 'iris-softmax-v1', created: 1767225600, predictions: [{ label: 'setosa', probabilities: { setosa: 0.98, versicolor: 0.02, virginica: 0 } }] }] });

export type PredictResponse = z.infer<typeof PredictResponseSchema>;
