import { z } from 'zod';
import { ValidationFailed, type FieldError } from '../http/problems.js';

export const MAX_ROWS = 1000;

/**
 * The largest magnitude of a feature (in centimetres). Iris measurements are a few
 * centimetres; the bound is loose on purpose, and keeps every logit finite (1e308 × a weight
 * would overflow to Infinity and leave no probability to compute).
 */
export const MAX_FEATURE_MAGNITUDE = 1_000_000;

// zod 4 rejects NaN and ±Infinity (JSON's 1e999 parses to Infinity); the bound rejects the finite extremes.
const feature = z
  .number()
  .min(-MAX_FEATURE_MAGNITUDE, `must be between -${MAX_FEATURE_MAGNITUDE} and ${MAX_FEATURE_MAGNITUDE} (centimetres)`)
  .max(MAX_FEATURE_MAGNITUDE, `must be between -${MAX_FEATURE_MAGNITUDE} and ${MAX_FEATURE_MAGNITUDE} (centimetres)`);
const irisRow = z.tuple([feature, feature, feature, feature]);

/** Contract section 4: 1 to 1000 rows of 4 finite numbers (each within ±MAX_FEATURE_MAGNITUDE), nothing else. */
export const PredictRequestSchema = z
  .strictObject({
    inputs: z.array(irisRow).min(1).max(MAX_ROWS),
  })
  // Documentation only (the OpenAPI document's component and example); validation is unchanged.
  .meta({
    ref: 'PredictRequest',
    description: 'Rows of Iris features in centimetres, in the order of GET /v1/models `features`: sepal length, sepal width, petal length, petal width.',
    examples: [{ inputs: [[5.1, 3.5, 1.4, 0.2]] }],
  });

export type PredictRequest = z.infer<typeof PredictRequestSchema>;

/** Validates the parsed body; throws 422 listing every failing path as a JSON Pointer. */
export function parsePredictRequest(body: unknown): PredictRequest {
  const result = PredictRequestSchema.safeParse(body);
  if (result.success) return result.data;
  const errors: FieldError[] = result.error.issues.slice(0, 20).map((issue) => ({
    pointer: issue.path.map((segment) => `/${String(segment).replace(/~/g, '~0').replace(/\//g, '~1')}`).join(''),
    detail: issue.message,
  }));
  throw new ValidationFailed(errors);
}
