import { readFileSync, statSync } from 'node:fs';
import { importJWK, type JWK } from 'jose';
import { ConfigError, EnvReader, type Env } from '@m2m/common';
import { DEFAULT_DPOP_ALGORITHM, DPOP_ALGORITHMS, DPoPKey } from './dpop/dpop-key.js';
import type { ClientAssertionKey } from './tokens/token-source.js';

export interface CallerConfig {
  /**
   * The authorization server (ISSUER). Undefined when only PREDICTOR_URL is set: it is then
   * taken from the predictor's protected-resource metadata (RFC 9728, `discoverAuthorizationServer`).
   * Neither set: http://localhost:9000.
   */
  issuer: string | undefined;
  predictorUrl: string;
  clientId: string;
  /** The current client secret (re-read from CLIENT_SECRET_FILE when the file changes); undefined with a private key. */
  clientSecret: (() => string) | undefined;
  /** The current private_key_jwt key (re-read from CLIENT_PRIVATE_KEY_FILE when it changes). */
  clientKey: (() => Promise<ClientAssertionKey>) | undefined;
  /** Scopes to ask for; undefined lets the auth-server grant the client's registered scopes. */
  scope: string | undefined;
  /**
   * RFC 8707 resource indicator (PREDICTOR_AUDIENCE); undefined lets the auth-server use its
   * default (the predictor). In discovery, the identifier the metadata's `resource` must be.
   */
  resource: string | undefined;
  allowInsecureHttp: boolean;
  /** DPoP (CLIENT_DPOP=true, or CLIENT_DPOP_KEY_FILE): the key every token and request is bound to; undefined: bearer tokens. */
  dpop: DPoPConfig | undefined;
}

export interface DPoPConfig {
  /** Where the key comes from, for messages: the key file, or "a new ES256 key pair". */
  source: string;
  /** The key, made or imported once on the first call: one key pair for everything this configuration makes. */
  key: () => Promise<DPoPKey>;
}

/** Reads the caller's configuration (contract, section 2); throws ConfigError naming the variable. */
export function loadCallerConfig(env: Env): CallerConfig {
  const read = new EnvReader(env);
  const clientId = read.string('CLIENT_ID');
  if (!clientId) throw new ConfigError('CLIENT_ID is required');
  const secret = read.string('CLIENT_SECRET');
  const secretFile = read.string('CLIENT_SECRET_FILE');
  const keyFile = read.string('CLIENT_PRIVATE_KEY_FILE');
  if ([secret, secretFile, keyFile].filter(Boolean).length > 1) throw new ConfigError('CLIENT_SECRET, CLIENT_SECRET_FILE and CLIENT_PRIVATE_KEY_FILE: set only one');
  if (!secret && !secretFile && !keyFile) throw new ConfigError('CLIENT_SECRET, CLIENT_SECRET_FILE or CLIENT_PRIVATE_KEY_FILE is required');
  const resource = read.string('PREDICTOR_AUDIENCE');
  const issuer = read.string('ISSUER');
  const predictorUrl = read.string('PREDICTOR_URL');
  return {
    // PREDICTOR_URL alone: the authorization server comes from the predictor's metadata.
    issuer: issuer === undefined && predictorUrl !== undefined ? undefined : read.url('ISSUER', 'http://localhost:9000'),
    predictorUrl: read.url('PREDICTOR_URL', 'http://localhost:8080'),
    clientId,
    clientSecret: secretFile ? fileReader('CLIENT_SECRET_FILE', secretFile, (text) => text.trim()) : secret ? () => secret : undefined,
    clientKey: keyFile ? privateKeyReader(keyFile) : undefined,
    scope: read.string('SCOPE'),
    resource: resource === undefined ? undefined : read.url('PREDICTOR_AUDIENCE', resource),
    allowInsecureHttp: read.oneOf('ALLOW_INSECURE_HTTP', 'false', ['true', 'false']) === 'true',
    dpop: readDPoP(read),
  };
}

/**
 * CLIENT_DPOP=true: a new key pair per run (CLIENT_DPOP_ALG, default ES256, its private key not
 * extractable); CLIENT_DPOP_KEY_FILE: a private JWK from that file (it turns DPoP on by itself),
 * so that tokens stay bound to one key across runs. The file is read and checked here.
 */
function readDPoP(read: EnvReader): DPoPConfig | undefined {
  const keyFile = read.string('CLIENT_DPOP_KEY_FILE');
  const enabled = read.oneOf('CLIENT_DPOP', keyFile === undefined ? 'false' : 'true', ['true', 'false']) === 'true';
  const alg = read.string('CLIENT_DPOP_ALG');
  if (!enabled) {
    if (keyFile !== undefined) throw new ConfigError('CLIENT_DPOP_KEY_FILE is set but CLIENT_DPOP=false: unset one of them');
    if (alg !== undefined) throw new ConfigError('CLIENT_DPOP_ALG is set but DPoP is off: set CLIENT_DPOP=true too');
    return undefined;
  }
  if (keyFile === undefined) {
    const algorithm = alg ?? DEFAULT_DPOP_ALGORITHM;
    if (!(DPOP_ALGORITHMS as readonly string[]).includes(algorithm)) throw new ConfigError(`CLIENT_DPOP_ALG must be one of ${DPOP_ALGORITHMS.join(', ')}, got "${algorithm}"`);
    return { source: `a new ${algorithm} key pair`, key: once(() => DPoPKey.generate(algorithm)) };
  }
  if (alg !== undefined) throw new ConfigError('CLIENT_DPOP_ALG is for a generated key: with CLIENT_DPOP_KEY_FILE the key file\'s "alg" is used');
  let text: string;
  try {
    text = readFileSync(keyFile, 'utf8');
  } catch (error) {
    throw new ConfigError(`CLIENT_DPOP_KEY_FILE: cannot read ${keyFile} (${(error as NodeJS.ErrnoException).code})`);
  }
  let jwk: JWK;
  try {
    jwk = JSON.parse(text) as JWK;
  } catch {
    throw new ConfigError(`CLIENT_DPOP_KEY_FILE: ${keyFile} is not a JSON Web Key`);
  }
  if (typeof jwk !== 'object' || jwk === null || !['EC', 'OKP', 'RSA'].includes(String(jwk.kty)) || typeof jwk.d !== 'string') {
    throw new ConfigError(`CLIENT_DPOP_KEY_FILE: ${keyFile} must be a private JWK (kty EC, OKP or RSA, with "d")`);
  }
  return { source: keyFile, key: once(() => DPoPKey.fromJwk(jwk, { source: `CLIENT_DPOP_KEY_FILE ${keyFile}` })) };
}

/** Calls `make` once; a failure is not kept (the next call tries again). */
function once<T>(make: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | undefined;
  return () =>
    (made ??= make().catch((error: unknown) => {
      made = undefined;
      throw error;
    }));
}

/**
 * Returns a reader that re-reads the file when its modification time or size changes,
 * so a rotated secret or key is used without a restart. Checked once at start-up.
 */
function fileReader<T>(variable: string, path: string, parse: (text: string) => T): () => T {
  let cached: { version: string; value: T } | undefined;
  const read = (): T => {
    let stat;
    try {
      stat = statSync(path);
    } catch (error) {
      throw new ConfigError(`${variable}: cannot read ${path} (${(error as NodeJS.ErrnoException).code})`);
    }
    const version = `${stat.mtimeMs}:${stat.size}`;
    if (cached?.version !== version) {
      const text = readFileSync(path, 'utf8');
      if (text.trim() === '') throw new ConfigError(`${variable}: ${path} is empty`);
      cached = { version, value: parse(text) };
    }
    return cached.value;
  };
  read();
  return read;
}

/** A private JWK (with `kid` and `alg`) for private_key_jwt, imported once per file version. */
function privateKeyReader(path: string): () => Promise<ClientAssertionKey> {
  const readJwk = fileReader('CLIENT_PRIVATE_KEY_FILE', path, (text) => {
    let jwk: JWK;
    try {
      jwk = JSON.parse(text) as JWK;
    } catch {
      throw new ConfigError(`CLIENT_PRIVATE_KEY_FILE: ${path} is not a JSON Web Key`);
    }
    if (!jwk.kid || !jwk.alg || !jwk.d) throw new ConfigError(`CLIENT_PRIVATE_KEY_FILE: ${path} must be a private JWK with "kid" and "alg"`);
    return { jwk, imported: importJWK(jwk, jwk.alg).then((key) => ({ key: key as ClientAssertionKey['key'], kid: jwk.kid! })) };
  });
  return () => readJwk().imported;
}
