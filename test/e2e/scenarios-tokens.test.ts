import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { startTypeScript, temporaryDirectory } from '../src/harness/processes.js';
import { browserOrSkip, withReportPage } from '../src/report/browser.js';
import { itRunsScenarios, SCENARIO_HALVES } from '../src/scenarios/testing.js';

describe('scenarios (server-side evidence): tokens, keys and clients', () => {
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
    assert.deepEqual([...SCENARIO_HALVES.tokens, ...SCENARIO_HALVES.operations].sort(), names.sort(), 'each scenario is run by one of the two files');
  });

  itRunsScenarios(SCENARIO_HALVES.tokens, () => traces.path);

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
