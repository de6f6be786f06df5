import { Counter, Registry } from 'prom-client';

/** The auth-server's Prometheus metrics (`GET /metrics` on the admin listener), on a registry of its own. */
export function createAuthMetrics() {
  const registry = new Registry();
  return {
    registry,
    clientAuthFailures: new Counter({
      name: 'auth_client_auth_failures_total',
      help: 'Token requests refused with invalid_client (wrong or unknown credentials, replayed or too long-lived assertions).',
      registers: [registry],
    }),
    clientAuthThrottled: new Counter({
      name: 'auth_client_auth_throttled_total',
      help: 'Token requests refused with 429 after failed client authentications, by limit: client (delay per client id) or address (bucket per source address).',
      labelNames: ['limit'] as const,
      registers: [registry],
    }),
  };
}

export type AuthMetrics = ReturnType<typeof createAuthMetrics>;
