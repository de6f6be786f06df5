import type { Logger } from '@m2m/common';
import type { AuthServerConfig } from './config.js';
import { createProvider } from './provider.js';
import { AuthHttpServer } from './server.js';
import type { SigningKeyFile } from './signing-keys.js';

export interface RunningAuthServer {
  issuer: string;
  port: number;
  http: AuthHttpServer;
  close(): Promise<void>;
}

/** Starts the listener, then builds the provider for the issuer that matches the bound port. */
export async function startAuthServer(deps: {
  config: AuthServerConfig;
  signingKeys: SigningKeyFile;
  logger: Logger;
}): Promise<RunningAuthServer> {
  const { config, signingKeys, logger } = deps;
  const http = new AuthHttpServer(logger);
  const { port } = await http.listen(config.port, config.host);
  const issuer = config.issuer ?? `http://localhost:${port}`;
  const provider = await createProvider({
    issuer,
    audience: config.audience,
    accessTokenTtlSeconds: config.accessTokenTtlSeconds,
    clients: config.clients,
    signingKeys: signingKeys.keys,
  });
  provider.on('grant.success', (ctx) => {
    logger.info({ event: 'token.issued', clientId: ctx.oidc.client?.clientId, scope: ctx.oidc.entities.ClientCredentials?.scope }, 'token issued');
  });
  provider.on('grant.error', (ctx, error) => {
    const { error: code, error_detail: detail } = error as { error?: string; error_detail?: string };
    logger.warn({ event: 'token.refused', clientId: ctx.oidc.client?.clientId, error: code, detail }, 'token refused');
  });
  provider.on('server_error', (_ctx, error) => logger.error({ err: error }, 'server error'));
  http.use(provider);
  logger.info(
    { issuer, port, audience: config.audience, accessTokenTtl: config.accessTokenTtlSeconds, kids: signingKeys.keys.map((key) => key.kid) },
    'listening',
  );
  return { issuer, port, http, close: () => http.close() };
}
