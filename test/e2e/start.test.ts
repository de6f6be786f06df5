import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { freePort, isAlive, startTypeScript, stopAll, temporaryDirectory, type ManagedProcess } from '../src/harness/processes.js';
import { DEV_ENV, requestToken } from '../src/harness/system.js';

/**
 * `npm start` (test/src/start.ts, with dev.env as the npm script loads it): the start-up
 * a user sees. Every port is a free one (0 where the summary reports the real one), and
 * each test waits on output, never for a time.
 */

/** Children of `npm start`, which stopAll does not know: killed in `after` if a test left one behind. */
const grandchildren: number[] = [];
let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;

before(async () => {
  dataDir = await temporaryDirectory('npm-start');
});
after(async () => {
  await stopAll();
  for (const pid of grandchildren) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  await dataDir.remove();
});

function npmStart(env: Record<string, string>, args: string[] = []): ManagedProcess {
  return startTypeScript('npm start', 'test/src/start.ts', { ...DEV_ENV, ADMIN_PORT: '0', METRICS_PORT: '0', USAGE_ADMIN_PORT: '0', ...env }, args);
}

/** The summary npm start ends its start-up with (stderr, from `start: … ready` to its last line). */
async function summaryOf(start: ManagedProcess, timeoutMs = 60_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const first = start.stderrLines.findIndex((line) => /^start: .* ready$/.test(line));
    const last = start.stderrLines.findIndex((line, index) => index > first && /^ {2}Ctrl-C /.test(line));
    // The optional note follows the Ctrl-C line.
    if (first >= 0 && last >= 0) return start.stderrLines.slice(first, start.stderrLines.length);
    if (start.child.exitCode !== null || start.child.signalCode !== null) throw new Error(`npm start exited before its summary\n${start.output()}`);
    if (Date.now() > deadline) throw new Error(`no summary after ${timeoutMs} ms\n${start.output()}`);
    await sleep(25);
  }
}

function rememberChildren(start: ManagedProcess): void {
  for (const record of start.records) if (record.msg === 'listening') grandchildren.push(record['pid'] as number);
}

/** Runs a command line as the summary prints it (`NAME=value … npx caller …` or `… npm run -s admin -- …`), without a shell. */
async function runPrinted(line: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const words = [...line.trim().matchAll(/'([^']*)'|(\S+)/g)].map((match) => match[1] ?? match[2]!);
  const env: Record<string, string> = {};
  while (/^[A-Z_]+=/.test(words[0] ?? '')) {
    const assignment = words.shift()!;
    env[assignment.slice(0, assignment.indexOf('='))] = assignment.slice(assignment.indexOf('=') + 1);
  }
  let cli: ManagedProcess;
  if (words[0] === 'npx' && words[1] === 'caller') cli = startTypeScript('caller', 'caller/bin/caller.js', env, words.slice(2));
  else if (words.slice(0, 5).join(' ') === 'npm run -s admin --') cli = startTypeScript('admin', 'auth-server/src/admin-cli.ts', env, words.slice(5));
  else throw new Error(`not a command the test knows how to run: ${line}`);
  const { code } = await cli.exited;
  return { code, stdout: cli.stdoutLines.join('\n'), stderr: cli.stderrLines.join('\n') };
}

describe('npm start', () => {
  it('starts the auth-server, then the predictor, with no warning or error, and ends with the URLs and the commands to try', async () => {
    const authPort = await freePort();
    const start = npmStart({ AUTH_PORT: String(authPort), PREDICTOR_PORT: '0', ISSUER: `http://localhost:${authPort}`, DATA_DIR: `${dataDir.path}/both/auth`, PREDICTOR_DATA_DIR: `${dataDir.path}/both/predictor` });
    const summary = await summaryOf(start);
    rememberChildren(start);
    const text = summary.join('\n');

    // Quiet: every stdout line is a log record, none at warn or above; stderr holds the summary only.
    assert.deepEqual(start.stdoutLines.filter((line) => !line.startsWith('{')), [], 'stdout is the JSON log stream');
    assert.deepEqual(start.records.filter((record) => ['warn', 'error', 'fatal'].includes(record['level'] as string)), [], start.output());
    assert.deepEqual(start.stderrLines.slice(0, start.stderrLines.length - summary.length), [], 'nothing on stderr before the summary');
    assert.doesNotMatch(text, /warn|error|unsupported|fail/i);

    // The predictor started once the auth-server listened, and its first key fetch succeeded.
    const authListening = start.records.findIndex((record) => record['service'] === 'auth-server' && record.msg === 'listening');
    const predictorFirst = start.records.findIndex((record) => record['service'] === 'predictor');
    assert.ok(authListening >= 0 && predictorFirst > authListening, start.output());
    assert.ok(start.records.some((record) => record['event'] === 'jwks.loaded'), start.output());
    const auth = start.records[authListening]!;
    const predictor = start.records.find((record) => record['service'] === 'predictor' && record.msg === 'listening')!;

    assert.equal(summary[0], 'start: auth-server and predictor ready');
    assert.match(text, new RegExp(`http://localhost:${authPort} +issuer`));
    assert.match(text, new RegExp(`http://127\\.0\\.0\\.1:${auth['adminPort'] as number} +admin API, port ${auth['adminPort'] as number}\\b`));
    assert.match(text, new RegExp(`http://localhost:${predictor['port'] as number}/v1/predict +API \\(signing keys loaded\\)`));
    assert.match(text, new RegExp(`http://127\\.0\\.0\\.1:${predictor['metricsPort'] as number}/metrics +metrics`));
    assert.match(text, new RegExp(`http://127\\.0\\.0\\.1:${predictor['usageAdminPort'] as number}/v1/usage +usage report`));
    assert.match(text, /npm start -- --only auth-server/);

    // The two commands, as printed (here with the ports of this run), work.
    const predict = summary.find((line) => /npx caller predict '\[\[5\.1,3\.5,1\.4,0\.2\]\]'$/.test(line));
    const clients = summary.find((line) => /npm run -s admin -- clients list$/.test(line));
    assert.ok(predict && clients, text);
    const prediction = await runPrinted(predict);
    assert.equal(prediction.code, 0, prediction.stderr);
    assert.equal((JSON.parse(prediction.stdout) as { predictions: { label: string }[] }).predictions[0]?.label, 'setosa');
    const listed = await runPrinted(clients);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /demo-caller/);

    assert.deepEqual(await start.stop(), { code: 0, signal: null }, start.output());
  });

  it('--only runs one server: the auth-server stops and starts again while the predictor keeps serving', async () => {
    const authPort = await freePort();
    const issuer = `http://localhost:${authPort}`;
    const authEnv = { AUTH_PORT: String(authPort), ISSUER: issuer, DATA_DIR: `${dataDir.path}/only/auth` };
    const auth = npmStart(authEnv, ['--only', 'auth-server']);
    const authSummary = await summaryOf(auth);
    rememberChildren(auth);
    assert.equal(authSummary[0], 'start: auth-server ready');
    assert.doesNotMatch(authSummary.join('\n'), /predictor +http/);
    assert.ok(authSummary.some((line) => /npx caller token$/.test(line)), authSummary.join('\n'));
    assert.deepEqual(auth.records.filter((record) => record['service'] !== 'auth-server'), [], 'only the auth-server runs');

    const predictor = npmStart({ PREDICTOR_PORT: '0', ISSUER: issuer, PREDICTOR_DATA_DIR: `${dataDir.path}/only/predictor` }, ['--only', 'predictor']);
    const predictorSummary = await summaryOf(predictor);
    rememberChildren(predictor);
    assert.equal(predictorSummary[0], 'start: predictor ready');
    assert.match(predictorSummary.join('\n'), /API \(signing keys loaded\)/);
    assert.deepEqual(predictor.records.filter((record) => record['service'] !== 'predictor'), [], 'only the predictor runs');
    const predictorUrl = `http://localhost:${predictor.records.find((record) => record.msg === 'listening')!['port'] as number}`;

    const predict = async () => {
      const { status, body } = await requestToken(issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!, { scope: 'predict' });
      assert.equal(status, 200, JSON.stringify(body));
      const response = await fetch(`${predictorUrl}/v1/predict`, {
        method: 'POST',
        headers: { authorization: `Bearer ${body['access_token'] as string}`, 'content-type': 'application/json' },
        body: JSON.stringify({ inputs: [[5.1, 3.5, 1.4, 0.2]] }),
      });
      return response.status;
    };
    assert.equal(await predict(), 200);

    // The outage: the auth-server goes; the predictor, under its own npm start, stays up.
    assert.deepEqual(await auth.stop(), { code: 0, signal: null }, auth.output());
    assert.equal(predictor.child.exitCode, null, 'the predictor’s npm start is still running');
    assert.equal((await fetch(`${predictorUrl}/healthz`)).status, 200);

    // Back again on the same port and data: its tokens (same keys) are accepted.
    const again = npmStart(authEnv, ['--only', 'auth-server']);
    await summaryOf(again);
    rememberChildren(again);
    assert.equal(await predict(), 200);

    assert.deepEqual(await again.stop(), { code: 0, signal: null }, again.output());
    assert.deepEqual(await predictor.stop(), { code: 0, signal: null }, predictor.output());
  });

  it('refuses an --only it does not know with exit 2 and the usage', async () => {
    const start = npmStart({}, ['--only', 'usage-ledger']);
    assert.deepEqual(await start.exited, { code: 2, signal: null });
    assert.match(start.stderrLines.join('\n'), /^start: --only takes auth-server or predictor, not "usage-ledger"\nusage: npm start/);
    assert.deepEqual(start.records, []);
  });
});
