import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort, ManagedProcess, rememberSecret, REPOSITORY_ROOT, startTypeScript, stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { DEV_ENV, startAuthServer, type RunningAuthServer } from '../src/harness/system.js';

/** What a finished CLI run left: its exit code, stdout and stderr. */
async function finished(cli: ManagedProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { code } = await cli.exited;
  return { code, stdout: cli.stdoutLines.join('\n'), stderr: cli.stderrLines.join('\n') };
}

/** One line on stderr, `admin: …`, and no stack trace. */
function assertOneLineError(run: { stdout: string; stderr: string }, pattern: RegExp): void {
  assert.equal(run.stdout, '', 'nothing on stdout');
  assert.match(run.stderr, /^admin: [^\n]+$/, run.stderr);
  assert.match(run.stderr, pattern);
}

describe('admin CLI against a real auth-server', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;

  before(async () => {
    dataDir = await temporaryDirectory('admin-cli');
    // KEY_PROPAGATION_SECONDS stays at its default (600 s): a rotation without --force is a 409.
    auth = await startAuthServer({ dataDir: dataDir.path });
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  const adminEnv = (env: Record<string, string> = {}) => ({ ADMIN_URL: auth.adminUrl, ADMIN_TOKEN: DEV_ENV['ADMIN_TOKEN']!, ...env });
  const admin = (args: string[], env: Record<string, string> = {}) => finished(startTypeScript('admin', 'auth-server/src/admin-cli.ts', adminEnv(env), args));
  /** The way docs/auth-server.md documents: through npm, as an operator types it. */
  const npmRunAdmin = (args: string[]) =>
    finished(
      new ManagedProcess(
        'admin',
        spawn('npm', ['run', '-s', 'admin', '--', ...args], {
          cwd: REPOSITORY_ROOT,
          env: { PATH: process.env['PATH'] ?? '', ...(process.env['HOME'] ? { HOME: process.env['HOME'] } : {}), ...adminEnv() },
          stdio: ['pipe', 'pipe', 'pipe'],
        }),
      ),
    );

  it('prints only JSON on stdout through `npm run -s admin -- …` (no npm banner), and npm keeps its exit code', async () => {
    const [keys, clients, stats, unknown] = await Promise.all([
      npmRunAdmin(['keys', 'list']),
      npmRunAdmin(['clients', 'list']),
      npmRunAdmin(['stats']),
      npmRunAdmin(['clients', 'set-plan', 'no-such-client', 'standard']),
    ]);
    for (const run of [keys, clients, stats]) assert.equal(run.code, 0, run.stderr);
    assert.deepEqual((JSON.parse(keys.stdout) as { state: string }[]).map((key) => key.state).sort(), ['current', 'next']);
    assert.ok((JSON.parse(clients.stdout) as { client_id: string }[]).some((client) => client.client_id === 'demo-caller'));
    assert.equal(typeof (JSON.parse(stats.stdout) as { tokenRequests: number }).tokenRequests, 'number');
    assert.equal(unknown.code, 4);
    assertOneLineError(unknown, /404: no client no-such-client/);
  });

  it('prints each change as one JSON document; a new secret only in it, or only in --secret-file (mode 0600)', async () => {
    const added = await admin(['clients', 'add', 'cli-batch', '--scopes', 'predict', '--plan', 'free']);
    assert.equal(added.code, 0, added.stderr);
    const { client, client_secret: secret } = JSON.parse(added.stdout) as { client: { client_id: string; scopes: string[] }; client_secret: string };
    rememberSecret(secret);
    assert.deepEqual([client.client_id, client.scopes], ['cli-batch', ['predict']]);
    assert.match(added.stderr, /registered cli-batch/);
    assert.ok(!added.stderr.includes(secret), 'the secret is not on stderr');

    const secretFile = join(dataDir.path, 'cli-batch.secret');
    const rotated = await admin(['clients', 'rotate-secret', 'cli-batch', '--overlap', '60', '--secret-file', secretFile]);
    assert.equal(rotated.code, 0, rotated.stderr);
    const rotation = JSON.parse(rotated.stdout) as Record<string, string>;
    assert.deepEqual(Object.keys(rotation).sort(), ['client_id', 'previous_valid_until', 'secret_file']);
    const written = (await readFile(secretFile, 'utf8')).trim();
    rememberSecret(written);
    assert.ok(written.length >= 32 && !rotated.stdout.includes(written) && !rotated.stderr.includes(written));
    assert.equal((await stat(secretFile)).mode & 0o777, 0o600);

    for (const [args, check] of [
      [['clients', 'set-scopes', 'cli-batch', 'predict,models:read'], (view: Record<string, unknown>) => assert.deepEqual(view['scopes'], ['predict', 'models:read'])],
      [['clients', 'set-plan', 'cli-batch', 'standard'], (view: Record<string, unknown>) => assert.equal(view['plan'], 'standard')],
      [['clients', 'disable', 'cli-batch'], (view: Record<string, unknown>) => assert.equal(view['disabled'], true)],
      [['clients', 'enable', 'cli-batch'], (view: Record<string, unknown>) => assert.equal(view['disabled'], false)],
      [['clients', 'retire-secret', 'cli-batch'], (view: Record<string, unknown>) => assert.equal(view['previous_secret_valid_until'], undefined)],
    ] as const) {
      const run = await admin([...args]);
      assert.equal(run.code, 0, `${args.join(' ')}: ${run.stderr}`);
      check(JSON.parse(run.stdout) as Record<string, unknown>);
    }
    const forced = await admin(['keys', 'rotate', '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.ok((JSON.parse(forced.stdout) as { state: string }[]).some((key) => key.state === 'previous'));
  });

  it('exits 3 when not authorised: a wrong ADMIN_TOKEN (401), or none at all', async () => {
    const [wrong, none] = await Promise.all([
      admin(['clients', 'list'], { ADMIN_TOKEN: 'not-the-admin-token-not-the-admin-token' }),
      admin(['clients', 'list'], { ADMIN_TOKEN: '', NODE_ENV: 'production' }),
    ]);
    assert.equal(wrong.code, 3);
    assertOneLineError(wrong, /401.*ADMIN_TOKEN/);
    assert.equal(none.code, 3);
    assertOneLineError(none, /ADMIN_TOKEN is not set/);
  });

  it('exits 4 for an unknown client or key (404)', async () => {
    const [client, key] = await Promise.all([admin(['clients', 'rotate-secret', 'no-such-client']), admin(['keys', 'revoke', 'no-such-kid'])]);
    assert.equal(client.code, 4);
    assertOneLineError(client, /404: no client no-such-client/);
    assert.equal(key.code, 4);
    assertOneLineError(key, /404: no signing key no-such-kid/);
  });

  it('exits 5 on a conflict (409): adding a client that exists, rotating keys before next has propagated', async () => {
    const [exists, early] = await Promise.all([admin(['clients', 'add', 'demo-caller', '--scopes', 'predict', '--plan', 'free']), admin(['keys', 'rotate'])]);
    assert.equal(exists.code, 5);
    assertOneLineError(exists, /409: client demo-caller exists/);
    assert.equal(early.code, 5);
    assertOneLineError(early, /409: .*propagation/);
  });

  it('exits 6 when the admin API rejects the values (400): an unknown scope', async () => {
    const rejected = await admin(['clients', 'set-scopes', 'demo-free', 'admin']);
    assert.equal(rejected.code, 6);
    assertOneLineError(rejected, /400: scopes must be/);
  });

  it('exits 7 when the admin API does not answer', async () => {
    const unreachable = await admin(['stats'], { ADMIN_URL: `http://127.0.0.1:${await freePort()}` });
    assert.equal(unreachable.code, 7);
    assertOneLineError(unreachable, /unreachable .*ECONNREFUSED.*ADMIN_URL/);
  });

  it('exits 2 on a usage error, before any request: one line naming the mistake and where help is', async () => {
    // An unreachable ADMIN_URL: a usage error must be found without asking the server (else this would be 7).
    const env = { ADMIN_URL: `http://127.0.0.1:${await freePort()}` };
    const cases: [string[], RegExp][] = [
      [['frobnicate'], /unknown command "frobnicate".*\(admin --help\)/],
      [['clinets', 'list'], /unknown command "clinets"; did you mean "clients"\?/],
      [['clients', 'lst'], /unknown command "clients lst"; did you mean "clients list"\?.*\(admin clients --help\)/],
      [['clients'], /"clients" needs a command: list, add/],
      [['clients', 'list', '--frob'], /unknown option --frob for "clients list".*\(admin clients list --help\)/],
      [['keys', 'rotate', '--forse'], /unknown option --forse for "keys rotate"; did you mean "--force"\?/],
      [['clients', 'add'], /"clients add" needs <id> \(admin clients add --help\)/],
      [['clients', 'add', 'x', '--scopes', 'predict'], /"clients add" needs --plan <plan>/],
      [['clients', 'add', 'x', '--scopes', '--plan', 'free'], /--scopes needs a value/],
      [['clients', 'rotate-secret', 'x', '--overlap', 'soon'], /--overlap must be a whole number of seconds, not "soon"/],
      [['keys', 'list', 'extra'], /"keys list" takes no arguments, not also "extra"/],
    ];
    const runs = await Promise.all(cases.map(([args]) => admin(args, env)));
    runs.forEach((run, index) => {
      const [args, pattern] = cases[index]!;
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
      assertOneLineError(run, pattern);
    });
    const bare = await admin([], env);
    assert.equal(bare.code, 2);
    assert.equal(bare.stdout, '');
    assert.match(bare.stderr, /^usage: admin <command>/);
  });

  it('--help, -h and help, globally and per command, print the usage on stdout without a stack trace and exit 0', async () => {
    const cases: [string[], RegExp][] = [
      [['--help'], /^usage: admin <command>[\s\S]*npm run -s admin[\s\S]*clients rotate-secret[\s\S]*exit codes: 0 done/],
      [['-h'], /^usage: admin <command>/],
      [['help'], /^usage: admin <command>/],
      [['keys', '--help'], /^usage: admin keys <command>[\s\S]*keys rotate/],
      [['clients', 'add', '--help'], /^usage: admin clients add <id> --scopes <a,b> --plan <plan>[\s\S]*--secret-file <path>/],
      [['keys', 'rotate', '-h'], /^usage: admin keys rotate \[--force\]/],
      [['help', 'clients', 'rotate-secret'], /^usage: admin clients rotate-secret <id> \[--overlap <seconds>\]/],
      [['stats', '--help', '--bogus'], /^usage: admin stats/],
    ];
    // No ADMIN_TOKEN and no server: help needs neither.
    const runs = await Promise.all(cases.map(([args]) => admin(args, { ADMIN_URL: 'http://127.0.0.1:9', ADMIN_TOKEN: '', NODE_ENV: 'production' })));
    runs.forEach((run, index) => {
      const [args, pattern] = cases[index]!;
      assert.equal(run.code, 0, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stdout, pattern);
      assert.doesNotMatch(run.stdout, /^\s+at /m, 'no stack trace');
      assert.equal(run.stderr, '');
    });
    const unknown = await admin(['frobnicate', '--help']);
    assert.equal(unknown.code, 2);
    assertOneLineError(unknown, /unknown command "frobnicate"/);
  });
});
