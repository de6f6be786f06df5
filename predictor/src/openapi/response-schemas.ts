import { z } from 'zod';

/**
 * The 200 bodies of the routes other than POST /v1/predict (predict/response-schema.ts), for
 * the OpenAPI document; app.ts builds them with `satisfies` these types.
 */

export const HealthSchema = z.object({ status: z.literal('ok') }).meta({ ref: 'Health' });

export const ReadinessSchema = z
  .object({
    status: z.enum(['ready', 'degraded']).describe('`degraded`: a store failed and its failure policy serves from this replica\'s memory.'),
    stores: z.record(z.string(), z.string()).optional().describe('Each store with its engine and state, e.g. `{"rate_limiter": "redis: down (fallback: memory)"}`.'),
    usage: z
      .object({ sink: z.string(), up: z.boolean(), backlog: z.int().min(0), oldestAgeSeconds: z.number().min(0).optional() })
      .optional()
      .describe('The usage relay; never a reason not to serve.'),
  })
  .meta({ ref: 'Readiness' });

export const ModelListSchema = z
  .object({
    data: z.array(
      z.object({
        id: z.string(),
        object: z.literal('model'),
        features: z.array(z.string()).describe('The order of the four numbers of an input row (centimetres).'),
        labels: z.array(z.string()),
        training: z.object({ rows: z.int(), epochs: z.int(), learningRate: z.number(), l2: z.number(), accuracy: z.number().min(0).max(1) }),
      }),
    ),
  })
  .meta({ ref: 'ModelList' });

export type ModelList = z.infer<typeof ModelListSchema>;

/** RFC 9728 section 2 (auth/resource-metadata.ts builds it). */
export const ProtectedResourceMetadataSchema = z
  .looseObject({
    resource: z.string(),
    authorization_servers: z.array(z.string()),
    scopes_supported: z.array(z.string()),
    bearer_methods_supported: z.array(z.string()),
    dpop_signing_alg_values_supported: z.array(z.string()).optional(),
    dpop_bound_access_tokens_required: z.boolean(),
    resource_documentation: z.string().optional(),
  })
  .meta({ ref: 'ProtectedResourceMetadata' });
