import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { startTypeScript, temporaryDirectory } from '../src/harness/processes.js';
import { formatResult, runScenario, SCENARIOS } from '../src/scenarios/index.js';

describe('token-rotation scenarios (server-side evidence)', () => {
  let traces: Awaited<ReturnType<typeof temporaryDirectory>>;
  before(async () => {
    traces = await temporaryDirectory('traces');
  });
  after(() => traces.remove());

  it('npm run scenario -- --list names all ten', async () => {
    const list = startTypeScript('scenario', 'test/src/scenario.ts', {}, ['--list']);
    assert.equal((await list.exited).code, 0);
    const names = list.stdoutLines.map((line) => line.split(/\s+/)[0]);
    assert.deepEqual(names, ['token-expiry', 'signing-key-rotation', 'emergency-key-revocation', 'client-secret-rotation', 'scope-revocation', 'rate-limit-storm', 'lost-response', 'auth-server-outage', 'store-outage', 'usage-exactly-once']);
  });

  for (const scenario of SCENARIOS) {
    it(`${scenario.name} passes and writes its sequence diagram`, async () => {
      const tracePath = `${traces.path}/${scenario.name}.mmd`;
      const result = await runScenario(scenario, { tracePath });
      assert.ok(result.passed, formatResult(result));
      const diagram = await readFile(tracePath, 'utf8');
      assert.match(diagram, /^sequenceDiagram\n/);
      assert.match(diagram, /Caller->>(Predictor|Proxy): /);
    });
  }
});
