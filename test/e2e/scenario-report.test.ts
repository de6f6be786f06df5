import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { startTypeScript, temporaryDirectory, type LogRecord } from '../src/harness/processes.js';
import { browserOrSkip, withReportPage } from '../src/report/browser.js';
import { collectReport, type ScenarioReport } from '../src/report/collect.js';
import { renderIndexPage, renderReportPage } from '../src/report/page.js';
import { Timeline } from '../src/report/timeline.js';
import { formatSummary } from '../src/scenarios/index.js';
import { Trace } from '../src/scenarios/trace.js';

/** A run of 4 s made up here: a rotation at 2 s, requests of two clients on both sides, tokens of two keys, a 429. */
function madeUpReport(): ScenarioReport {
  const timeline = new Timeline();
  const time = (ms: number) => new Date(timeline.epochAtStart + ms).toISOString();
  const request = (clientId: string | undefined, atMs: number, status: number, extra: Record<string, unknown> = {}): LogRecord => ({
    msg: 'request',
    route: '/v1/predict',
    time: time(atMs),
    status,
    ...(clientId ? { clientId } : {}),
    kid: atMs < 2_000 ? 'k-old' : 'k-new',
    rateLimit: { allowed: status !== 429, ...(status === 429 ? { violated: 'burst' } : {}), remaining: [status === 429 ? 0 : 3, 90] },
    ...extra,
  });
  const records: LogRecord[] = [
    { event: 'jwks.loaded', time: time(50), kids: ['k-old', 'k-new'] },
    ...[200, 600, 1_000, 1_500].map((at) => request('alpha', at, 200)),
    request('alpha', 1_700, 200, { idempotency: 'replayed' }),
    request('beta', 1_800, 429),
    request(undefined, 1_900, 401, { idempotencyKey: 'key-of-beta' }),
    ...[2_300, 2_800, 3_500].map((at) => request('alpha', at, 200)),
    request('beta', 3_000, 503),
  ];
  timeline.clientOfKey.set('key-of-beta', 'beta');
  timeline.tokens.push({ clientId: 'alpha', atMs: 100, outcome: 'issued', kid: 'k-old', first: true }, { clientId: 'alpha', atMs: 2_200, outcome: 'issued', kid: 'k-new', first: false });
  timeline.tokens.push({ clientId: 'beta', atMs: 1_750, outcome: 'failed', error: 'invalid_client', first: true });
  timeline.connectionFailures.push({ clientId: 'beta', atMs: 2_500, error: 'ECONNRESET' });
  timeline.events.push({ kind: 'key-rotated', label: 'admin: keys rotate', atMs: 2_000 }, { kind: 'proxy-faults', label: 'proxy drops every 5th answer <b>', atMs: 2_400, untilMs: 3_600 });
  timeline.proxyFaults.push({ atMs: 2_600, kind: 'dropped-response' });
  return collectReport(
    { timeline, predictors: [{ name: 'predictor :1', records }] },
    { name: 'made-up', summary: 'A run made up for the test.', passed: true, durationMs: 4_000, evidence: [{ what: 'a check', observed: 1, expected: '1', ok: true }], mermaid: 'sequenceDiagram\n' },
  );
}

describe('scenario reports', () => {
  let dir: Awaited<ReturnType<typeof temporaryDirectory>>;
  before(async () => {
    dir = await temporaryDirectory('report');
  });
  after(() => dir.remove());

  it('places every answer on the run axis by client and outcome: replays, 401s of a known key, connection failures', () => {
    const report = madeUpReport();
    const outcomes = (clientId: string) => report.requests.filter((request) => request.clientId === clientId).map((request) => request.outcome);
    assert.deepEqual(outcomes('alpha'), ['200', '200', '200', '200', 'replay', '200', '200', '200']);
    assert.deepEqual(outcomes('beta'), ['429', '401', 'connection failure', '503']);
    assert.deepEqual(
      report.rateLimits.filter((point) => !point.allowed).map((point) => [point.clientId, point.violated]),
      [['beta', 'burst']],
    );
    assert.ok(Math.abs(report.requests[0]!.atMs - 200) < 1);
  });

  it('renders a page that loads nothing: inline SVG marks with their data, every label escaped', () => {
    const html = renderReportPage(madeUpReport());
    assert.doesNotMatch(html, /<script|<link |@import|url\(/);
    assert.equal(html.match(/class="event" data-kind="key-rotated"/g)?.length, 1);
    assert.equal(html.match(/class="request"/g)?.length, 12);
    assert.match(html, /data-outcome="connection failure"/);
    assert.match(html, /class="token"[^>]*data-kid="k-new"/);
    assert.match(html, /proxy drops every 5th answer &lt;b&gt;/);
    assert.doesNotMatch(html, /<b>/);
    assert.match(html, /class="refusal"[^>]*data-policy="burst"/);
    const index = renderIndexPage([{ name: 'made-up', passed: false, durationMs: 1_234, href: 'made-up.html', summary: 's' }]);
    assert.match(index, /0 of 1 passed/);
    assert.match(index, /href="made-up.html"/);
  });

  it('renders in headless Chromium without a console error, with the rotation between requests', async (t) => {
    if (!(await browserOrSkip(t))) return;
    const path = `${dir.path}/made-up.html`;
    await writeFile(path, renderReportPage(madeUpReport()));
    await withReportPage(path, async ({ page, errors, externalRequests }) => {
      const rotation = await page.locator('g.event[data-kind="key-rotated"]');
      assert.equal(await rotation.count(), 1);
      const rotationBox = (await rotation.locator('line').boundingBox())!;
      const xs = await page.locator('rect.request').evaluateAll((marks) => marks.map((mark) => mark.getBoundingClientRect().x));
      assert.ok(xs.some((x) => x < rotationBox.x) && xs.some((x) => x > rotationBox.x), 'requests drawn on both sides of the rotation');
      assert.ok(rotationBox.height > 100, 'the mark crosses the lanes');
      assert.deepEqual(errors, []);
      assert.deepEqual(externalRequests, []);
    });
  });
});

describe('the Mermaid trace', () => {
  it('folds identical exchanges of parallel callers into one line with a count, keeps token lines in place, declares only participants that take part', () => {
    const trace = new Trace();
    for (let i = 0; i < 3; i += 1) {
      trace.exchange('Caller', 'Predictor', 'POST /v1/predict attempt 1', '200 → done');
      trace.exchange('Caller', 'Predictor', 'POST /v1/predict attempt 1', '429 → wait 1s (retry-after)');
    }
    trace.exchange('Caller', 'AuthServer', 'POST /token (demo-caller)', 'token kid k-2', { standalone: true });
    trace.exchange('Caller', 'Predictor', 'POST /v1/predict attempt 1', '200 → done');
    const lines = trace
      .render('t')
      .split('\n')
      .map((line) => line.replace(/\+[\d.–]+s /, ''));
    assert.deepEqual(lines, [
      'sequenceDiagram',
      '  title t',
      '  participant Caller',
      '  participant Predictor',
      '  participant AuthServer',
      '  Caller->>Predictor: 3× POST /v1/predict attempt 1',
      '  Predictor-->>Caller: 3× 200 → done',
      '  Caller->>Predictor: 3× POST /v1/predict attempt 1',
      '  Predictor-->>Caller: 3× 429 → wait 1s (retry-after)',
      '  Caller->>AuthServer: POST /token (demo-caller)',
      '  AuthServer-->>Caller: token kid k-2',
      '  Caller->>Predictor: POST /v1/predict attempt 1',
      '  Predictor-->>Caller: 200 → done',
      '',
    ]);
  });
});

describe('npm run -s scenario (the command line)', () => {
  const cli = async (args: string[]) => {
    const run = startTypeScript('scenario', 'test/src/scenario.ts', {}, args);
    return { code: (await run.exited).code, stdout: run.stdoutLines.join('\n'), stderr: run.stderrLines.join('\n') };
  };

  it('--help prints the usage on stdout and exits 0', async () => {
    const { code, stdout, stderr } = await cli(['--help']);
    assert.equal(code, 0);
    assert.match(stdout, /^usage: npm run -s scenario -- <name…\|all>/);
    assert.match(stdout, /exit codes: 0 all passed, 1 a scenario failed, 2 usage error/);
    assert.equal(stderr, '');
  });

  it('an unknown scenario, an unknown option or no name: exit 2, the reason and the usage on stderr, no stack trace, nothing on stdout', async () => {
    for (const args of [['no-such-scenario'], ['--frobnicate'], []]) {
      const { code, stdout, stderr } = await cli(args);
      assert.equal(code, 2, args.join(' '));
      assert.equal(stdout, '');
      assert.match(stderr, /^scenario: .+\n\nusage: /);
      assert.doesNotMatch(stderr, /\n\s+at /);
    }
  });

  it('ends a run of several scenarios with one summary table', () => {
    const summary = formatSummary([
      { name: 'token-expiry', passed: true, evidence: [], durationMs: 7_210 },
      { name: 'signup-spike', passed: false, evidence: [], durationMs: 19_000 },
    ]);
    assert.deepEqual(summary.split('\n'), ['scenario      result  duration', 'token-expiry  PASS       7.2 s', 'signup-spike  FAIL      19.0 s', '1 of 2 passed']);
  });
});
