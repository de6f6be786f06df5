import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnv } from 'node:util';
import type { Env } from '@m2m/common';

const REPOSITORY_DEV_ENV = fileURLToPath(new URL('../../../dev.env', import.meta.url));

/**
 * Outside production, a caller with no client configured acts as dev.env's
 * `demo-caller` (contract, section 2). Returns the environment to use and a note
 * saying where the credentials came from.
 */
export function withDevDefaults(env: Env, cwd: string): { env: Env; note?: string } {
  if (env['NODE_ENV'] === 'production' || env['CLIENT_ID'] || env['CLIENT_SECRET'] || env['CLIENT_SECRET_FILE']) return { env };
  const path = [join(cwd, 'dev.env'), REPOSITORY_DEV_ENV].find((candidate) => existsSync(candidate));
  if (!path) return { env };
  const devEnv = parseEnv(readFileSync(path, 'utf8'));
  const secret = devEnv['DEMO_CALLER_SECRET'];
  if (!secret) return { env };
  return { env: { ...env, CLIENT_ID: 'demo-caller', CLIENT_SECRET: secret }, note: `no CLIENT_ID set: using demo-caller from ${path}` };
}
