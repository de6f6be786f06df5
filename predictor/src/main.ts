import { ConfigError, createLogger } from '@m2m/common';
import { buildApp } from './app.js';
import { IssuerKeys } from './auth/issuer-keys.js';
import { createTokenVerifier } from './auth/token-verifier.js';
import { loadPredictorConfig } from './config.js';
import { loadIrisModel } from './model/index.js';
import { close, listen } from './server.js';

let config;
try {
  config = loadPredictorConfig(process.env);
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`predictor: ${error.message}\n`);
    process.exit(2);
  }
  throw error;
}

const logger = createLogger('predictor', config.logLevel);
const keys = new IssuerKeys({
  issuer: config.issuer,
  jwksUri: config.jwksUri,
  cooldownMs: config.jwksCooldownMs,
  cacheMaxAgeMs: config.jwksCacheMaxAgeMs,
  logger,
});
const app = buildApp({
  model: loadIrisModel(),
  verifyToken: createTokenVerifier({
    issuer: config.issuer,
    audience: config.audience,
    algorithms: config.algorithms,
    clockToleranceSeconds: config.clockToleranceSeconds,
    getKey: keys.getKey,
  }),
  notReadyReason: () => (keys.ready ? undefined : 'signing keys not loaded yet'),
  logger,
  bodyLimitBytes: config.bodyLimitBytes,
});

const shutdown = new AbortController();
const { server, port } = await listen(app, config.port, config.host);
logger.info({ port, issuer: config.issuer, audience: config.audience }, 'listening');
keys.load(shutdown.signal).catch(() => {});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    logger.info({ signal }, 'shutting down');
    shutdown.abort();
    close(server).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
