import { describeMissingEngines, type Engine, engineAvailability, enginesRequired } from './engines.js';

/**
 * For test files only: the engines are probed once when this module loads (top-level await),
 * so `skipUnlessEngines` can answer synchronously where node:test reads `skip`:
 *
 *   describe('PostgresThing', { skip: skipUnlessEngines(['postgres']) }, () => { … });
 *
 * node:test prints a skipped suite with its reason ("﹣ PostgresThing # needs PostgreSQL (…)"),
 * but does not count skipped suites in its totals; the one loud line of the run comes from
 * test/src/engines-check.ts, which `npm test` runs before the suites.
 */
const availability = await engineAvailability();

export class EngineRequiredUnderCi extends Error {
  override name = 'EngineRequiredUnderCi';
}

/**
 * false when every engine of `engines` answers, so the tests run; otherwise the reason to skip
 * them, naming each missing engine and the command that starts it. Under CI=true a missing
 * engine throws EngineRequiredUnderCi instead: CI must prove these tests, never skip them.
 */
export function skipUnlessEngines(engines: readonly Engine[]): false | string {
  const missing = engines.filter((engine) => !availability[engine]);
  if (missing.length === 0) return false;
  const what = describeMissingEngines(missing);
  if (enginesRequired()) throw new EngineRequiredUnderCi(`CI=true and these tests need ${what}`);
  return `needs ${what}`;
}
