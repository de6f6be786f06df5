import { readFileSync, statSync } from 'node:fs';
import { ConfigError, EnvReader, type Env } from '@m2m/common';

export interface CallerConfig {
  issuer: string;
  predictorUrl: string;
  clientId: string;
  /** The current client secret (re-read from CLIENT_SECRET_FILE when the file changes). */
  clientSecret: () => string;
  /** Scopes to ask for; undefined lets the auth-server grant the client's registered scopes. */
  scope: string | undefined;
  /** RFC 8707 resource indicator; undefined lets the auth-server use its default (the predictor). */
  resource: string | undefined;
  allowInsecureHttp: boolean;
}

/** Reads the caller's configuration (contract, section 2); throws ConfigError naming the variable. */
export function loadCallerConfig(env: Env): CallerConfig {
  const read = new EnvReader(env);
  const clientId = read.string('CLIENT_ID');
  if (!clientId) throw new ConfigError('CLIENT_ID is required');
  const secret = read.string('CLIENT_SECRET');
  const secretFile = read.string('CLIENT_SECRET_FILE');
  if (secret && secretFile) throw new ConfigError('CLIENT_SECRET and CLIENT_SECRET_FILE are both set; use one');
  if (!secret && !secretFile) throw new ConfigError('CLIENT_SECRET or CLIENT_SECRET_FILE is required');
  const resource = read.string('PREDICTOR_AUDIENCE');
  return {
    issuer: read.url('ISSUER', 'http://localhost:9000'),
    predictorUrl: read.url('PREDICTOR_URL', 'http://localhost:8080'),
    clientId,
    clientSecret: secretFile ? secretFileReader(secretFile) : () => secret as string,
    scope: read.string('SCOPE'),
    resource: resource === undefined ? undefined : read.url('PREDICTOR_AUDIENCE', resource),
    allowInsecureHttp: read.oneOf('ALLOW_INSECURE_HTTP', 'false', ['true', 'false']) === 'true',
  };
}

/**
 * Returns a reader that re-reads the file when its modification time or size changes,
 * so a rotated secret is used without a restart. Checked once at start-up.
 */
function secretFileReader(path: string): () => string {
  let cached: { version: string; secret: string } | undefined;
  const read = (): string => {
    let stat;
    try {
      stat = statSync(path);
    } catch (error) {
      throw new ConfigError(`CLIENT_SECRET_FILE: cannot read ${path} (${(error as NodeJS.ErrnoException).code})`);
    }
    const version = `${stat.mtimeMs}:${stat.size}`;
    if (cached?.version !== version) {
      const secret = readFileSync(path, 'utf8').trim();
      if (secret === '') throw new ConfigError(`CLIENT_SECRET_FILE: ${path} is empty`);
      cached = { version, secret };
    }
    return cached.secret;
  };
  read();
  return read;
}
