import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { freePort, isAlive, startTypeScript, stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { DEV_ENV, startAuthServer, startPredictor, TEST_AUDIENCE, type RunningAuthServer, type RunningPredictor } from '../src/harness/system.js';

after(stopAll);

describe('npm start', () => {
  it('runs both servers in the foreground and stops both on SIGTERM', async () => {
    const dataDir = await temporaryDirectory('start');
    const [authPort, predictorPort] = [await freePort(), await freePort()];
    const start = startTypeScript('npm start', 'test/src/start.ts', {
      ...DEV_ENV,
      AUTH_PORT: String(authPort),
      ADMIN_PORT: '0',
      PREDICTOR_PORT: String(predictorPort),
      METRICS_PORT: '0',
      // dev.env's fixed 9002 would collide with another npm start (a second test run beside this one).
      USAGE_ADMIN_PORT: '0',
      ISSUER: `http://localhost:${authPort}`,
      DATA_DIR: `${dataDir.path}/auth`,
      PREDICTOR_DATA_DIR: `${dataDir.path}/predictor`,
    });
    await start.waitForLog((record) => record['service'] === 'auth-server' && record.msg === 'listening', 'auth-server listening');
    await start.waitForLog((record) => record['service'] === 'predictor' && record['event'] === 'jwks.loaded', 'predictor keys loaded');
    assert.equal((await fetch(`http://localhost:${predictorPort}/readyz`)).status, 200);
    const childPids = start.records.filter((record) => record.msg === 'listening').map((record) => record['pid'] as number);
    assert.equal(childPids.length, 2);
    assert.deepEqual(await start.stop(), { code: 0, signal: null });
    assert.deepEqual(childPids.filter(isAlive), []);
    await dataDir.remove();
  });
});

describe('npm run demo', () => {
  it('runs the demo workload, shows predictions and exits 0', async () => {
    const demo = startTypeScript('demo', 'test/src/demo.ts', {});
    const { code } = await demo.exited;
    assert.equal(code, 0, demo.output());
    const output = demo.stdoutLines.join('\n');
    assert.match(output, /→ setosa/);
    assert.match(output, /→ virginica/);
    assert.match(output, /^(\d+)\/\1 steps behaved as expected\.$/m);
  });
});

describe('caller CLI', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let predictor: RunningPredictor;

  before(async () => {
    dataDir = await temporaryDirectory('cli');
    auth = await startAuthServer({ dataDir: dataDir.path });
    predictor = await startPredictor({ issuer: auth.issuer, dataDir: dataDir.path });
  });
  after(() => dataDir.remove());

  async function caller(args: string[], env: Record<string, string> = {}) {
    const cli = startTypeScript('caller', 'caller/bin/caller.js', { ISSUER: auth.issuer, PREDICTOR_URL: predictor.url, PREDICTOR_AUDIENCE: TEST_AUDIENCE, ...env }, args);
    const { code } = await cli.exited;
    return { code, stdout: cli.stdoutLines.join('\n'), stderr: cli.stderrLines.join('\n') };
  }
  const demoCaller = () => ({ CLIENT_ID: 'demo-caller', CLIENT_SECRET: DEV_ENV['DEMO_CALLER_SECRET']! });

  it('token prints the decoded claims, never the raw token unless --raw', async () => {
    const { code, stdout } = await caller(['token'], demoCaller());
    assert.equal(code, 0);
    const { header, claims } = JSON.parse(stdout) as { header: { typ: string }; claims: { client_id: string; scope: string } };
    assert.equal(header.typ, 'at+jwt');
    assert.equal(claims.client_id, 'demo-caller');
    assert.doesNotMatch(stdout, /eyJ/);
    const raw = await caller(['token', '--raw'], demoCaller());
    assert.match(raw.stdout, /^eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+$/);
  });

  it('uses the demo-caller of dev.env when no client is configured, and says so on stderr', async () => {
    const { code, stderr } = await caller(['token']);
    assert.equal(code, 0);
    assert.match(stderr, /using demo-caller from .*dev\.env/);
  });

  it('predict prints the JSON response for an argument, a file and stdin', async () => {
    const { code, stdout } = await caller(['predict', '{"inputs":[[6.7,3.0,5.2,2.3]]}'], demoCaller());
    assert.equal(code, 0);
    assert.equal((JSON.parse(stdout) as { predictions: { label: string }[] }).predictions[0]?.label, 'virginica');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(`${dataDir.path}/rows.json`, '[[5.1,3.5,1.4,0.2]]');
    const fromFile = await caller(['predict', `@${dataDir.path}/rows.json`], demoCaller());
    assert.equal((JSON.parse(fromFile.stdout) as { predictions: { label: string }[] }).predictions[0]?.label, 'setosa');
    const piped = startTypeScript('caller', 'caller/bin/caller.js', { ISSUER: auth.issuer, PREDICTOR_URL: predictor.url, ...demoCaller() }, ['predict', '-']);
    piped.child.stdin!.end('{"inputs":[[5.1,3.5,1.4,0.2]]}');
    assert.equal((await piped.exited).code, 0);
  });

  it('exits with distinct codes: configuration 2, authentication 3, authorisation 4, invalid request 5, unreachable 7', async () => {
    const secretlessEnv = { CLIENT_ID: 'demo-caller', NODE_ENV: 'production' };
    assert.equal((await caller(['predict', '[[1,1,1,1]]'], secretlessEnv)).code, 2);
    const wrongSecret = await caller(['token'], { CLIENT_ID: 'demo-caller', CLIENT_SECRET: 'wrong' });
    assert.equal(wrongSecret.code, 3);
    assert.match(wrongSecret.stderr, /invalid_client/);
    assert.doesNotMatch(wrongSecret.stderr, /wrong/);
    const readonly = await caller(['predict', '[[1,1,1,1]]'], { CLIENT_ID: 'demo-readonly', CLIENT_SECRET: DEV_ENV['DEMO_READONLY_SECRET']!, SCOPE: 'models:read' });
    assert.equal(readonly.code, 4);
    assert.match(readonly.stderr, /insufficient_scope/);
    const invalid = await caller(['predict', '[[1,2]]'], demoCaller());
    assert.equal(invalid.code, 5);
    assert.match(invalid.stderr, /422/);
    const unreachable = await caller(['predict', '[[1,1,1,1]]'], { ...demoCaller(), PREDICTOR_URL: `http://localhost:${await freePort()}` });
    assert.equal(unreachable.code, 7);
  });
});

describe('configuration errors', () => {
  for (const [service, entry, env, variable] of [
    ['auth-server', 'auth-server/src/main.ts', { ...DEV_ENV, ACCESS_TOKEN_TTL: 'soon' }, 'ACCESS_TOKEN_TTL'],
    ['predictor', 'predictor/src/main.ts', { PREDICTOR_PORT: '99999' }, 'PREDICTOR_PORT'],
    ['predictor', 'predictor/src/main.ts', { ACCEPTED_ALGORITHMS: 'HS256' }, 'ACCEPTED_ALGORITHMS'],
  ] as const) {
    it(`${service} stops with a one-line error naming ${variable}`, async () => {
      const server = startTypeScript(service, entry, env);
      const { code } = await server.exited;
      assert.equal(code, 2);
      const reasons = server.stderrLines.filter((line) => line.startsWith(`${service}:`));
      assert.equal(reasons.length, 1);
      assert.match(reasons[0]!, new RegExp(`^${service}: ${variable} `));
    });
  }

  it('predictor stops with a one-line error naming METRICS_PORT when that port is taken (exit 1, no stack trace)', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const dataDir = await temporaryDirectory('port-taken');
    try {
      const port = (taken.address() as AddressInfo).port;
      const server = startTypeScript('predictor', 'predictor/src/main.ts', { PREDICTOR_PORT: '0', METRICS_PORT: String(port), PREDICTOR_DATA_DIR: dataDir.path, ISSUER: 'http://127.0.0.1:1' });
      const { code } = await server.exited;
      assert.equal(code, 1);
      assert.deepEqual(
        server.stderrLines.filter((line) => line.startsWith('predictor:')),
        [`predictor: METRICS_PORT: cannot listen on 127.0.0.1:${port} (EADDRINUSE)`],
      );
      assert.ok(!server.stderrLines.some((line) => /^\s+at /.test(line)), 'no stack trace');
    } finally {
      taken.close();
      await dataDir.remove();
    }
  });
});
