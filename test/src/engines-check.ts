import { describeMissingEngines, enginesRequired, missingEngines } from '../../common/src/testing/engines.js';

/**
 * `npm test` runs this before the suites: the one loud line of a run whose engine tests are skipped.
 *
 * Why here and not in the test files: node:test runs every file in a process of its own, so a
 * line printed by each file would come once per file (a dozen times), and a --test-reporter of
 * our own would have to replace or wrap spec for both runs (unit and system) and still print
 * twice. The tests themselves skip through common/src/testing/skip-unless-engines.ts, which
 * probes the same addresses the same way; node:test then marks each skipped suite with the same
 * reason ("# needs PostgreSQL (…)"). This line is the summary a person cannot miss.
 *
 * All engines answer: prints nothing, exit 0. Some are missing: one line on stderr, exit 0 —
 * except under CI=true, where a missing engine is a failure (exit 1), so CI still proves them.
 */
const missing = await missingEngines();
if (missing.length > 0) {
  const what = describeMissingEngines(missing);
  if (enginesRequired()) {
    process.stderr.write(`FAILED: CI=true and the engine tests need ${what}\n`);
    process.exitCode = 1;
  } else {
    process.stderr.write(`SKIPPED: the tests that need ${what} — each skipped suite is marked "# needs …" below; CI=true makes this a failure\n`);
  }
}
