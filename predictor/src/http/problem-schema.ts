import { z } from 'zod';
import { TYPE_BASE } from './problems.js';

/**
 * The shapes of the problem bodies that problems.ts renders (RFC 9457), for the OpenAPI
 * document. The classes there are the source of the answers; these describe them, and
 * test/e2e/openapi.test.ts checks real answers against them.
 */

/** RFC 9457 section 3.1 members; other members are extensions of a problem type (kept: a loose object). */
export const ProblemSchema = z
  .looseObject({
    type: z
      .string()
      .regex(new RegExp(`^${TYPE_BASE}[a-z0-9-]+$`))
      .describe(`\`${TYPE_BASE}<slug>\`; the slug names the problem (e.g. \`rate-limited\`).`),
    title: z.string(),
    status: z.int().min(400).max(599),
    detail: z.string(),
  })
  .meta({ ref: 'Problem', description: 'RFC 9457 problem details (application/problem+json).' });

export const FieldErrorSchema = z
  .object({
    pointer: z.string().describe('JSON Pointer (RFC 6901) to the failing value of the request body; empty for the body itself.'),
    detail: z.string(),
  })
  .meta({ ref: 'FieldError' });

/** 422: `validation-failed` lists every failing field; `idempotency-key-reused` has no `errors`. */
export const ValidationProblemSchema = ProblemSchema.extend({
  errors: z.array(FieldErrorSchema).max(20).optional().describe('Every failing field (at most 20), for `validation-failed`.'),
}).meta({ ref: 'ValidationProblem' });

/** 429: which policy refused the request (draft-ietf-httpapi-ratelimit-headers). */
export const RateLimitedProblemSchema = ProblemSchema.extend({
  violated_policy: z.enum(['burst', 'daily']),
  limit: z.int().min(0),
  window_seconds: z.int().min(1),
  retry_after_seconds: z.int().min(0),
}).meta({ ref: 'RateLimitedProblem' });

/** 403: the scope the route needs (also in `WWW-Authenticate`). */
export const InsufficientScopeProblemSchema = ProblemSchema.extend({
  required_scope: z.string(),
}).meta({ ref: 'InsufficientScopeProblem' });

/** 413: the configured `BODY_LIMIT_BYTES`. */
export const PayloadTooLargeProblemSchema = ProblemSchema.extend({
  limit_bytes: z.int().min(1),
}).meta({ ref: 'PayloadTooLargeProblem' });

/** 503 from /readyz: each store with its engine and state. */
export const NotReadyProblemSchema = ProblemSchema.extend({
  stores: z.record(z.string(), z.string()).optional(),
}).meta({ ref: 'NotReadyProblem' });
