import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import type { Logger } from '@m2m/common';
import { buildAdminApp } from './admin/admin-app.js';
import { ClientAuthThrottle } from './client-auth/failure-throttle.js';
import { ClientRegistry } from './clients/registry.js';
import type { AuthServerConfig } from './config.js';
import { KeyRing } from './keys/key-ring.js';
import { createAuthMetrics, type AuthMetrics } from './metrics.js';
import { AuthOperations } from './operations.js';
import { createProvider } from './provider.js';
import { AuthHttpServer } from './server.js';
import { postgresAdapter, purgeExpiredModels } from './state/oidc-adapter.js';
import type { LoadedAuthState } from './state/open.js';
import { PostgresStateStorage } from './state/postgres-state.js';
import { SqliteProviderRecords } from './state/sqlite-adapter.js';

export interface RunningAuthServer {
  issuer: string;
  port: number;
  adminPort: number | undefined;
  http: AuthHttpServer;
  operations: AuthOperations;
  /** The listeners by name (`http`, and `admin` when enabled), for the shutdown to drain. */
  listeners: Record<string, Server>;
  /** Prometheus metrics (served on the admin listener's `GET /metrics`). */
  metrics: AuthMetrics;
  /** Stops the background timers and closes the state storage: after the listeners (main.ts's shutdown). */
  closeState(): Promise<void>;
  /** Logs the `listening` line: main.ts calls it once the signal handlers are in place. */
  announce(): void;
}

/** Batches of expired provider records deleted per 10 s run, at most (1 000 each). */
const PURGE_BATCHES = 20;

/** Previous keys stay published this long past the token lifetime (clock skew at verifiers). */
const CLOCK_TOLERANCE_MS = 60_000;

/**
 * Starts the listener, then builds the provider for the issuer that matches the bound port.
 * `now` (ms) is the clock of the client-authentication throttle; tests inject it.
 */
export async function startAuthServer(deps: { config: AuthServerConfig; state: LoadedAuthState; logger: Logger; now?: () => number }): Promise<RunningAuthServer> {
  const { config, logger, state } = deps;
  const { storage, seeded } = state;
  const registry = new ClientRegistry(state.clients, (clients) => storage.saveClients(clients));
  const shared = storage instanceof PostgresStateStorage ? storage : undefined;
  // oidc-provider's records (above all ReplayDetection: used assertions) outlive every provider
  // rebuild and restart: PostgreSQL shared by the replicas, or a SQLite file in the data directory.
  const records = shared ? undefined : SqliteProviderRecords.open(join(config.dataDir, 'provider-records.sqlite'));
  const adapter = shared ? postgresAdapter(shared.pool, shared.schema) : records!.adapter();
  const metrics = createAuthMetrics();
  const throttle = new ClientAuthThrottle(config.clientAuthLimits, deps.now);
  const http = new AuthHttpServer(
    logger,
    (clientId) => {
      const client = registry.list().find((candidate) => candidate.clientId === clientId && !candidate.disabled);
      return client?.scopes.join(' ');
    },
    { throttle, metrics },
  );
  const { port } = await http.listen(config.port, config.host);
  const issuer = config.issuer ?? `http://localhost:${port}`;
  let tokensIssued = 0;

  const rebuild = async () => {
    const ring = operations.ring;
    const provider = await createProvider({
      issuer,
      audience: config.audience,
      accessTokenTtlSeconds: config.accessTokenTtlSeconds,
      clients: registry.active(),
      publishedKeys: ring.published(),
      signingKid: ring.current.kid,
      verifySecret: (clientId, presented) => registry.verifySecret(clientId, presented),
      adapter,
      clientAssertionMaxLifetimeSeconds: config.clientAssertionMaxLifetimeSeconds,
      dpopNonces: config.dpopNonces,
    });
    provider.on('grant.success', (ctx) => {
      tokensIssued += 1;
      logger.info({ event: 'token.issued', clientId: ctx.oidc.client?.clientId, scope: ctx.oidc.entities.ClientCredentials?.scope, tokenType: ctx.oidc.entities.ClientCredentials?.tokenType, kid: ring.current.kid }, 'token issued');
    });
    provider.on('grant.error', (ctx, error) => {
      const { error: code, error_detail: detail } = error as { error?: string; error_detail?: string };
      logger.warn({ event: 'token.refused', clientId: ctx.oidc.client?.clientId, error: code, detail }, 'token refused');
    });
    provider.on('server_error', (_ctx, error) => logger.error({ err: error }, 'server error'));
    http.use(provider);
  };
  const operations = new AuthOperations(
    new KeyRing(state.keys, { propagationMs: config.keyPropagationSeconds * 1000, tokenLifetimeMs: config.accessTokenTtlSeconds * 1000 + CLOCK_TOLERANCE_MS }),
    { registry, storage, rebuild, logger },
  );
  await rebuild();
  const pruning = setInterval(() => {
    operations.pruneKeys().catch((error: unknown) => logger.error({ err: error }, 'key pruning failed'));
    // Used assertions expire within CLIENT_ASSERTION_MAX_LIFETIME; up to PURGE_BATCHES × 1 000 records go per run.
    const purge = shared ? () => purgeExpiredModels(shared.pool, shared.schema) : async () => records!.purgeExpired();
    (async () => {
      for (let batch = 0; batch < PURGE_BATCHES && (await purge()) >= 1_000; batch += 1);
    })().catch((error: unknown) => logger.warn({ event: 'state.purge_failed', reason: (error as Error).message }, 'purging expired provider records failed'));
  }, 10_000);
  pruning.unref();
  // Replicas see each other's rotations and client changes within one sync period.
  let pulling = false;
  const syncing = shared
    ? setInterval(() => {
        // A database that hangs must not pile up pulls in front of the admin changes.
        if (pulling) return;
        pulling = true;
        operations
          .pullChanges()
          .catch((error: unknown) => logger.warn({ event: 'state.sync_failed', reason: (error as Error).message }, 'cannot read the shared state; serving the last known keys and clients'))
          .finally(() => (pulling = false));
      }, config.stateSyncMs)
    : undefined;
  syncing?.unref();

  let admin: Server | undefined;
  let adminPort: number | undefined;
  if (config.adminToken !== undefined && config.adminPort !== undefined) {
    const app = buildAdminApp({ operations, adminToken: config.adminToken, logger, metrics, stats: () => ({ tokenRequests: http.tokenRequests, tokensIssued, jwksRequests: http.jwksRequests }) });
    admin = await new Promise<Server>((resolve, reject) => {
      const server = serve({ fetch: app.fetch, port: config.adminPort!, hostname: config.adminHost }, () => resolve(server as Server)) as Server;
      server.once('error', reject);
    });
    adminPort = (admin.address() as AddressInfo).port;
  }

  const announce = () =>
    logger.info(
      {
        issuer,
        port,
        adminPort,
        adminHost: adminPort === undefined ? undefined : config.adminHost,
        audience: config.audience,
        accessTokenTtl: config.accessTokenTtlSeconds,
        clients: registry.active().map((client) => client.clientId),
        clientsSeeded: seeded,
        state: storage.kind,
        keys: operations.listKeys().map((key) => `${key.kid} (${key.state})`),
      },
      'listening',
    );
  return {
    announce,
    issuer,
    port,
    adminPort,
    http,
    operations,
    metrics,
    listeners: admin ? { http: http.server, admin } : { http: http.server },
    closeState: async () => {
      clearInterval(pruning);
      clearInterval(syncing);
      records?.close();
      await storage.close();
    },
  };
}
