import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { startTypeScript, temporaryDirectory } from '../src/harness/processes.js';
import { browserOrSkip, withReportPage } from '../src/report/browser.js';
import { formatResult, runScenario, SCENARIOS } from '../src/scenarios/index.js';
import { skipUnlessEngines } from '../../common/src/testing/skip-unless-engines.js';

describe('token-rotation scenarios (server-side evidence)', () => {
  let traces: Awaited<ReturnType<typeof temporaryDirectory>>;
  before(async () => {
    traces = await temporaryDirectory('traces');
  });
  after(() => traces.remove());

  it('npm run scenario -- --list names all twelve', async () => {
    const list = startTypeScript('scenario', 'test/src/scenario.ts', {}, ['--list']);
    assert.equal((await list.exited).code, 0);
    const names = list.stdoutLines.map((line) => line.split(/\s+/)[0]);
    assert.deepEqual(names, [
      'token-expiry',
      'signing-key-rotation',
      'emergency-key-revocation',
      'client-secret-rotation',
      'scope-revocation',
      'rate-limit-storm',
      'signup-spike',
      'lost-response',
      'auth-server-outage',
      'store-outage',
      'usage-exactly-once',
      'stolen-token',
    ]);
  });

  for (const scenario of SCENARIOS) {
    it(`${scenario.name} passes and writes its sequence diagram and its report`, { skip: skipUnlessEngines(scenario.engines ?? []) }, async () => {
      const tracePath = `${traces.path}/${scenario.name}.mmd`;
      const result = await runScenario(scenario, { tracePath, reportDir: traces.path });
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

  it('their reports render in headless Chromium: marks where the run put them, no console error, nothing fetched', async (t) => {
    if (!(await browserOrSkip(t))) return;
    const rotation = `${traces.path}/signing-key-rotation.html`;
    assert.ok(existsSync(rotation), 'the signing-key-rotation test wrote its report');
    await withReportPage(rotation, async ({ page, errors, externalRequests }) => {
      const rotations = await page.locator('g.event[data-kind="key-rotated"]').evaluateAll((marks) => marks.map((mark) => Number(mark.getAttribute('data-at-ms'))));
      assert.equal(rotations.length, 1, 'one rotation mark');
      const requests = await page.locator('rect.request[data-outcome="200"]').evaluateAll((marks) => marks.map((mark) => Number(mark.getAttribute('data-at-ms'))));
      assert.ok(requests.filter((at) => at < rotations[0]!).length > 0, 'requests before the rotation');
      assert.ok(requests.filter((at) => at > rotations[0]!).length > 0, 'requests after the rotation');
      const kids = await page.locator('g.token[data-outcome="issued"]').evaluateAll((marks) => [...new Set(marks.map((mark) => mark.getAttribute('data-kid')))]);
      assert.equal(kids.length, 2, `tokens of the old and the new key, got ${kids.join(', ')}`);
      assert.ok((await page.locator('g.jwks').count()) >= 1, 'the JWKS fetch');
      assert.ok((await page.locator('table.evidence tbody tr').count()) >= 5, 'the checklist');
      assert.deepEqual(errors, []);
      assert.deepEqual(externalRequests, []);
    });
    await withReportPage(`${traces.path}/signup-spike.html`, async ({ page, errors, externalRequests }) => {
      assert.equal(await page.locator('g.event[data-kind="client-disabled"]').count(), 1);
      assert.ok((await page.locator('rect.refusal[data-policy="daily"]').count()) > 0, 'the runaway hit its daily quota');
      assert.ok((await page.locator('rect.refusal[data-policy="burst"]').count()) > 0, 'an onboarding batch went past its bucket');
      assert.ok((await page.locator('path.burst').count()) > 0, 'the remaining burst over time');
      assert.deepEqual(errors, []);
      assert.deepEqual(externalRequests, []);
    });
  });
});
