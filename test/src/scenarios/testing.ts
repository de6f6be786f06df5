import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { it } from 'node:test';
import { skipUnlessEngines } from '../../../common/src/testing/skip-unless-engines.js';
import { formatResult, runScenario, SCENARIOS } from './index.js';

/**
 * The scenarios split in two halves of about equal length (about 70 s each), so the two
 * end-to-end files that run them can go side by side instead of one 145 s file.
 */
export const SCENARIO_HALVES = {
  tokens: ['token-expiry', 'signing-key-rotation', 'emergency-key-revocation', 'client-secret-rotation', 'scope-revocation', 'signup-spike', 'stolen-token'],
  operations: ['rate-limit-storm', 'lost-response', 'auth-server-outage', 'store-outage', 'usage-exactly-once'],
} as const;

/** One test per scenario named: it passes, and writes its sequence diagram and its HTML report into `traces()`. */
export function itRunsScenarios(names: readonly string[], traces: () => string): void {
  for (const name of names) {
    const scenario = SCENARIOS.find((candidate) => candidate.name === name);
    assert.ok(scenario, `no scenario ${name}`);
    it(`${scenario.name} passes and writes its sequence diagram and its report`, { skip: skipUnlessEngines(scenario.engines ?? []) }, async () => {
      const tracePath = `${traces()}/${scenario.name}.mmd`;
      const result = await runScenario(scenario, { tracePath, reportDir: traces() });
      assert.ok(result.passed, formatResult(result));
      const diagram = await readFile(tracePath, 'utf8');
      assert.match(diagram, /^sequenceDiagram\n/);
      assert.match(diagram, /Caller->>(Predictor|Proxy): /);
      // Condensed: every declared participant takes part; token lines name their key.
      for (const [, participant] of diagram.matchAll(/^ {2}participant (\w+)$/gm)) assert.match(diagram, new RegExp(`(>>|over )${participant}|${participant}-`), `${participant} declared but unused`);
      assert.match(diagram, /AuthServer-->>Caller: (\d+× )?token kid (?!\?)\S+/);
      const page = await readFile(result.reportPath!, 'utf8');
      assert.match(page, /<svg [^>]*>/);
      assert.doesNotMatch(page, /<script|<link |@import|url\(/, 'the report loads nothing');
    });
  }
}
