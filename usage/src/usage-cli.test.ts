import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { TEST_DATABASE_URL, withTestDatabase } from '../../predictor/src/testing/engines.js';
import { usageEvent } from './ledger-contract.js';
import { PostgresUsageLedger } from './ledger-postgres.js';
import { SqliteUsageLedger } from './ledger-sqlite.js';
import { usageReport } from './report.js';
import { runUsageCli } from './usage-cli.js';
import { skipUnlessEngines } from '../../common/src/testing/skip-unless-engines.js';

let dataDir: string;

before(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'usage-cli-'));
  const ledger = SqliteUsageLedger.open(join(dataDir, 'usage.db'));
  await ledger.record(usageEvent({ clientId: 'client-a', rows: 3, occurredAt: '2024-03-01T10:00:00.000Z' }));
  await ledger.record(usageEvent({ clientId: 'client-b', rows: 4, occurredAt: '2024-03-01T11:00:00.000Z' }));
  await ledger.record(usageEvent({ clientId: 'client-a', rows: 5, occurredAt: '2024-03-02T10:00:00.000Z' }));
  await ledger.close();
});

after(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

async function run(args: string[], env: Record<string, string> = { PREDICTOR_DATA_DIR: dataDir }): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runUsageCli(args, env, { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) });
  return { code, stdout, stderr };
}

describe('npm run usage -- report', () => {
  it('prints a table of the SQLite ledger in PREDICTOR_DATA_DIR, with a total', async () => {
    const { code, stdout, stderr } = await run(['report']);
    assert.equal(code, 0, stderr);
    assert.equal(
      stdout,
      [
        'DAY         CLIENT    PREDICTIONS  ROWS',
        '2024-03-01  client-a            1     3',
        '2024-03-01  client-b            1     4',
        '2024-03-02  client-a            1     5',
        'TOTAL                           3    12',
        '',
      ].join('\n'),
    );
  });

  it('prints JSON with --json, filtered by --client and --day', async () => {
    const { code, stdout } = await run(['report', '--client', 'client-a', '--day', '2024-03-02', '--json']);
    assert.equal(code, 0);
    assert.deepEqual(JSON.parse(stdout), usageReport([{ clientId: 'client-a', day: '2024-03-02', predictions: 1, rows: 5 }], { clientId: 'client-a', day: '2024-03-02' }));
  });

  it('says so in one line when nothing matches', async () => {
    const { code, stdout } = await run(['report', '--client=client-z']);
    assert.equal(code, 0);
    assert.equal(stdout, 'No usage recorded for client client-z.\n');
  });

  it('prints help on --help', async () => {
    const { code, stdout } = await run(['--help']);
    assert.equal(code, 0);
    assert.match(stdout, /^usage: npm run usage -- report \[--client ID\] \[--day YYYY-MM-DD\] \[--json\]/);
  });

  for (const [args, reason] of [
    [['report', '--day', '2024-02-30'], /--day must be a UTC date written YYYY-MM-DD, got "2024-02-30"/],
    [['report', '--day', '1/3/2024'], /--day must be a UTC date/],
    [['report', '--since', '2024-03-01'], /Unknown option '--since'/],
    [['report', '--client'], /Option '--client <value>' argument missing/],
    [['report', '--client', ''], /--client must not be empty/],
    [['report', 'client-a'], /unexpected argument "client-a"/],
    [['reprot'], /unknown command "reprot"/],
    [[], /missing command/],
  ] as const) {
    it(`exits 2 with one line for ${JSON.stringify(args)}`, async () => {
      const { code, stdout, stderr } = await run([...args]);
      assert.equal(code, 2);
      assert.equal(stdout, '');
      assert.match(stderr, reason);
      assert.equal(stderr.split('\n').length, 2, stderr);
    });
  }

  it('exits 2 for a DATABASE_URL that is not a PostgreSQL URL', async () => {
    const { code, stderr } = await run(['report'], { DATABASE_URL: 'redis://127.0.0.1:6379' });
    assert.equal(code, 2);
    assert.match(stderr, /DATABASE_URL must be a postgres: or postgresql: URL/);
  });

  it('exits 1 when no ledger file exists yet, saying what creates it, and creates none', async () => {
    const empty = join(dataDir, 'never-started');
    const { code, stdout, stderr } = await run(['report'], { PREDICTOR_DATA_DIR: empty });
    assert.equal(code, 1);
    assert.equal(stdout, '');
    assert.match(stderr, /no usage ledger at .*never-started\/usage\.db yet/);
    assert.match(stderr, /npm start/);
    assert.match(stderr, /npm run demo/);
    assert.equal(existsSync(empty), false);
  });

  it('exits 1 when the PostgreSQL ledger cannot be reached, without printing the password', { timeout: 10_000 }, async () => {
    const { code, stderr } = await run(['report'], { DATABASE_URL: 'postgres://postgres:s3cret@127.0.0.1:1/test' });
    assert.equal(code, 1);
    assert.match(stderr, /cannot open the usage ledger/);
    assert.doesNotMatch(stderr, /s3cret/);
  });

  it('runs as `npm run usage` does: a real process, its exit status and output', { timeout: 30_000 }, async () => {
    const root = fileURLToPath(new URL('../..', import.meta.url));
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'usage/src/usage-cli.ts', 'report', '--json'], {
      cwd: root,
      env: { ...process.env, PREDICTOR_DATA_DIR: dataDir, DATABASE_URL: '' },
    });
    assert.equal(JSON.parse(stdout).sum.rows, 12);
    await assert.rejects(
      promisify(execFile)(process.execPath, ['--import', 'tsx', 'usage/src/usage-cli.ts', 'report', '--day', 'today'], { cwd: root }),
      (error: { code?: number; stderr?: string }) => error.code === 2 && /--day must be/.test(error.stderr ?? ''),
    );
  });
});

describe('npm run usage -- report on PostgreSQL', { skip: skipUnlessEngines(['postgres']) }, () => {
  const database = withTestDatabase();

  it('reads the ledger from DATABASE_URL and DATABASE_SCHEMA when set', async () => {
    const schema = database.schema('usage_cli');
    const ledger = await PostgresUsageLedger.open({ connectionString: TEST_DATABASE_URL, schema });
    await ledger.record(usageEvent({ clientId: 'client-pg', rows: 9, occurredAt: '2024-03-03T10:00:00.000Z' }));
    await ledger.close();
    const { code, stdout } = await run(['report', '--json'], { DATABASE_URL: TEST_DATABASE_URL, DATABASE_SCHEMA: schema, PREDICTOR_DATA_DIR: dataDir });
    assert.equal(code, 0);
    assert.deepEqual(JSON.parse(stdout).totals, [{ clientId: 'client-pg', day: '2024-03-03', predictions: 1, rows: 9 }]);
  });
});
