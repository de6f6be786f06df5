import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The predictor's Prometheus metrics, on a registry of its own (no global state). */
export function createMetrics(options: { collectProcessMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.collectProcessMetrics ?? true) collectDefaultMetrics({ register: registry });
  return {
    registry,
    requests: new Counter({
      name: 'predictor_http_requests_total',
      help: 'HTTP requests by route, method and status.',
      labelNames: ['route', 'method', 'status'] as const,
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: 'predictor_http_request_duration_seconds',
      help: 'HTTP request latency by route and method.',
      labelNames: ['route', 'method'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: 'predictor_rate_limited_total',
      help: 'Requests refused with 429, by violated policy and plan.',
      labelNames: ['policy', 'plan'] as const,
      registers: [registry],
    }),
    idempotency: new Counter({
      name: 'predictor_idempotency_outcomes_total',
      help: 'Idempotency-Key outcomes: executed (stored and sent), replayed, in_flight, mismatch, released, refused (storing the result failed: 503), lease_lost (taken over: 503).',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    idempotencyExpired: new Gauge({
      name: 'predictor_idempotency_expired_records',
      help: 'Expired idempotency records still in the store after the latest purge run.',
      registers: [registry],
    }),
    idempotencyPurged: new Counter({
      name: 'predictor_idempotency_purged_total',
      help: 'Expired idempotency records deleted by the purge.',
      registers: [registry],
    }),
    usageBacklog: new Gauge({
      name: 'predictor_usage_outbox_backlog',
      help: 'Usage events written but not yet acknowledged by their sink (NATS JetStream or the in-process ledger).',
      registers: [registry],
    }),
    usageOldestAge: new Gauge({
      name: 'predictor_usage_outbox_oldest_age_seconds',
      help: 'How long the oldest unsent usage event has waited; 0 when none waits.',
      registers: [registry],
    }),
    usageRelayed: new Counter({
      name: 'predictor_usage_relayed_total',
      help: 'Usage events relayed from the outbox and acknowledged by their sink (a repeat after a crash counts again).',
      registers: [registry],
    }),
    usageRelayFailures: new Counter({
      name: 'predictor_usage_relay_failures_total',
      help: 'Relay rounds that failed (sink or outbox database unreachable); their events are relayed later.',
      registers: [registry],
    }),
    predictions: new Counter({
      name: 'predictor_model_executions_total',
      help: 'Model executions (requests that ran the model).',
      registers: [registry],
    }),
    storeUp: new Gauge({
      name: 'predictor_store_up',
      help: 'Whether a shared store (rate_limiter, idempotency) answered its last use: 1 up, 0 down.',
      labelNames: ['store'] as const,
      registers: [registry],
    }),
    storeFailures: new Counter({
      name: 'predictor_store_failures_total',
      help: 'Requests a shared store failed, by store and what the failure policy did: refused (503) or fallback.',
      labelNames: ['store', 'action'] as const,
      registers: [registry],
    }),
    storeErrors: new Counter({
      name: 'predictor_store_errors_total',
      help: 'Errors of a shared store that were not an outage (a rejected command, a bug), by store: 503 for that request only, the store stays up.',
      labelNames: ['store'] as const,
      registers: [registry],
    }),
    jwksFetches: new Counter({
      name: 'predictor_jwks_fetches_total',
      help: 'JWKS fetches by outcome.',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
