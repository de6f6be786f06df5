import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { before, describe, it } from 'node:test';
import { freePort, REPOSITORY_ROOT } from '../src/harness/processes.js';

/**
 * Without PostgreSQL, Redis or NATS `npm test` still passes: the suites that need them are
 * skipped with the reason, and test/src/engines-check.ts prints one loud line naming them and
 * how to start each; under CI=true both are failures. Proven here on one engine file whose
 * engine is "missing" (its URL points at a closed port), without touching the real engines.
 */
const ENGINE_FILE = 'usage/src/ledger-postgres.test.ts'; // PostgreSQL in top-level hooks, a shared contract and plain suites

interface Finished {
  code: number | null;
  output: string;
}

/** `node --import tsx <args>` in the repository with only `env` (and PATH): no CI, no NODE_TEST_CONTEXT of this run. */
function node(args: string[], env: Record<string, string>): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: REPOSITORY_ROOT, env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('engine tests where the engines are missing', () => {
  let missing: Record<string, string>;
  let port: number;
  before(async () => {
    port = await freePort();
    missing = {
      TEST_DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/test`,
      TEST_REDIS_URL: `redis://127.0.0.1:${port}`,
      TEST_NATS_URL: `nats://127.0.0.1:${port}`,
    };
  });

  it('are skipped, each suite saying which engine and how to start it, and the file passes', async () => {
    const run = await node(['--test', '--test-reporter=spec', ENGINE_FILE], missing);
    assert.equal(run.code, 0, run.output);
    const skipped = run.output.split('\n').filter((line) => line.includes(`# needs PostgreSQL (nothing answers at 127.0.0.1:${port}; start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start, or set TEST_DATABASE_URL)`));
    assert.equal(skipped.length, 3, `the contract and both suites skipped with the reason:\n${run.output}`);
    assert.match(run.output, /ℹ fail 0/);
    assert.match(run.output, /ℹ pass 0/, 'nothing ran against the missing engine');
  });

  it('npm test prints one loud line naming every missing engine and its start command, and goes on', async () => {
    const check = await node(['test/src/engines-check.ts'], missing);
    assert.equal(check.code, 0, check.output);
    const lines = check.output.trim().split('\n');
    assert.equal(lines.length, 1, check.output);
    assert.match(lines[0]!, /^SKIPPED: the tests that need PostgreSQL \(.*pg_ctlcluster --skip-systemctl-redirect \$\(ls \/etc\/postgresql\) main start.*\), Redis \(.*redis-server --daemonize yes --bind 127\.0\.0\.1 --port 6379 --save "" --appendonly no.*\), NATS \(.*\/usr\/sbin\/nats-server -- -a 127\.0\.0\.1 -p 4222 -js .*\)/);
    const scripts = (JSON.parse(await readFile(`${REPOSITORY_ROOT}/package.json`, 'utf8')) as { scripts: Record<string, string> }).scripts;
    assert.match(scripts['test']!, /^node --import tsx test\/src\/engines-check\.ts && /, 'before the suites, once per run');
  });

  it('under CI=true are failures naming the engine, in the file and in the check', async () => {
    const [run, check] = await Promise.all([
      node(['--test', '--test-reporter=spec', ENGINE_FILE], { ...missing, CI: 'true' }),
      node(['test/src/engines-check.ts'], { ...missing, CI: 'true' }),
    ]);
    assert.notEqual(run.code, 0, run.output);
    assert.match(run.output, /CI=true and these tests need PostgreSQL \(nothing answers at 127\.0\.0\.1:\d+; start it: pg_ctlcluster/);
    assert.equal(check.code, 1, check.output);
    assert.match(check.output, /^FAILED: CI=true and the engine tests need PostgreSQL \(.*pg_ctlcluster.*\), Redis \(.*\), NATS \(.*\)\n$/);
  });

  it('where the engines answer, the check says nothing', async () => {
    // The real engines of this machine may be down; a listening port of this test stands in for all three.
    const { createServer } = await import('node:net');
    const server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const up = (server.address() as { port: number }).port;
    try {
      const check = await node(['test/src/engines-check.ts'], {
        CI: 'true',
        TEST_DATABASE_URL: `postgres://postgres@127.0.0.1:${up}/test`,
        TEST_REDIS_URL: `redis://127.0.0.1:${up}`,
        TEST_NATS_URL: `nats://127.0.0.1:${up}`,
      });
      assert.equal(check.code, 0, check.output);
      assert.equal(check.output, '');
    } finally {
      server.close();
    }
  });
});
