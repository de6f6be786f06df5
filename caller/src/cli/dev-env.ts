import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnv } from 'node:util';
import { ConfigError, type Env } from '@m2m/common';

/** dev.env at the repository root, seen from caller/src/cli (sources) or caller/dist (the bundle). */
const REPOSITORY_DEV_ENV = [fileURLToPath(new URL('../../../dev.env', import.meta.url)), fileURLToPath(new URL('../../dev.env', import.meta.url))];

const CLIENT_CREDENTIALS = ['CLIENT_SECRET', 'CLIENT_SECRET_FILE', 'CLIENT_PRIVATE_KEY_FILE'] as const;

/**
 * Outside production, a caller with no client configured acts as dev.env's
 * `demo-caller` (contract, section 2): its secret comes from `DEMO_CALLER_SECRET` in
 * the environment (compose passes dev.env in with env_file; the image has no dev.env
 * file), else from a dev.env file in the working directory or the repository. Returns
 * the environment to use and a note saying where the credentials came from.
 */
export function withDevDefaults(env: Env, cwd: string): { env: Env; note?: string } {
  if (env['NODE_ENV'] === 'production' || env['CLIENT_ID']) return { env };
  const credential = CLIENT_CREDENTIALS.find((name) => env[name]);
  if (credential) {
    throw new ConfigError(`CLIENT_ID is required: ${credential} is set, so the default client (demo-caller of dev.env, used only when no client is configured) is not used; set CLIENT_ID too, or unset ${credential}`);
  }
  if (env['DEMO_CALLER_SECRET']) {
    return { env: { ...env, CLIENT_ID: 'demo-caller', CLIENT_SECRET: env['DEMO_CALLER_SECRET'] }, note: 'no CLIENT_ID set: using demo-caller with DEMO_CALLER_SECRET from the environment' };
  }
  const path = [join(cwd, 'dev.env'), ...REPOSITORY_DEV_ENV].find((candidate) => existsSync(candidate));
  const secret = path ? parseEnv(readFileSync(path, 'utf8'))['DEMO_CALLER_SECRET'] : undefined;
  if (!path || !secret) throw new ConfigError(`CLIENT_ID is required: the default client (demo-caller) needs DEMO_CALLER_SECRET, in the environment or in ${path ?? 'a dev.env file'}`);
  return { env: { ...env, CLIENT_ID: 'demo-caller', CLIENT_SECRET: secret }, note: `no CLIENT_ID set: using demo-caller from ${path}` };
}
