import { ConfigError, createLogger, shutdownOnSignals } from '@m2m/common';
import { loadAuthServerConfig } from './config.js';
import { SigningKeysError } from './keys/signing-key-file.js';
import { openAuthState, StateUnavailable } from './state/open.js';

// Configuration and keys are checked before oidc-provider is imported, so a refusal is
// one line (on Node 20 the import itself prints an unsupported-runtime warning).
let config;
let state;
try {
  config = loadAuthServerConfig(process.env);
  state = await openAuthState(config);
} catch (error) {
  if (error instanceof ConfigError || error instanceof SigningKeysError || error instanceof StateUnavailable) {
    process.stderr.write(`auth-server: ${error.message}\n`);
    // 2: fix the configuration; 1: the database may come back, a restart may succeed.
    process.exit(error instanceof StateUnavailable ? 1 : 2);
  }
  throw error;
}

const logger = createLogger('auth-server', config.logLevel);
const { startAuthServer } = await import('./app.js');
const server = await startAuthServer({ config, state, logger });

// SIGTERM/SIGINT: requests in flight get SHUTDOWN_GRACE_MS, the state a bounded close; exit 0, or 1 if forced.
shutdownOnSignals({ listeners: server.listeners, closeSteps: { state: () => server.closeState() }, logger, graceMs: config.shutdownGraceMs });
// Announced last: whoever waits for this line (a supervisor, a test) may signal at once.
server.announce();
