import type { Context } from 'hono';
import type { AppEnv } from './app-env.js';

/**
 * How many field lines named `name` (lower case) the request carried. Node and the fetch
 * `Headers` join repeated fields with ", ", which cannot be told from one value holding a
 * comma; the raw header lines of the Node request can. Undefined where the runtime does not
 * give them (`app.request()` in tests): then the joined value is all there is.
 */
export function fieldLineCount(c: Context<AppEnv>, name: string): number | undefined {
  const raw = c.env?.incoming?.rawHeaders;
  if (raw === undefined) return undefined;
  let count = 0;
  for (let index = 0; index < raw.length; index += 2) if (raw[index]!.toLowerCase() === name) count += 1;
  return count;
}
