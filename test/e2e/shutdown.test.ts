import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { AdminClient } from '@m2m/auth-server';
import { SHUTDOWN_CLOSE_MARGIN_MS } from '@m2m/common';
import { requirePostgres, requireRedis, TEST_DATABASE_URL, TEST_REDIS_URL, uniqueSchemaName } from '../../predictor/src/testing/engines.js';
import { TcpFaultProxy } from '../../predictor/src/testing/tcp-fault-proxy.js';
import { freePort, isAlive, startTypeScript, stopAll, temporaryDirectory, type LogRecord, type ManagedProcess } from '../src/harness/processes.js';
import { DEV_ENV, requestToken, startAuthServer, startPredictor, startUsageLedger } from '../src/harness/system.js';
import { skipUnlessEngines } from '../../common/src/testing/skip-unless-engines.js';
import { usageEventFixture } from '../../common/src/testing/usage-event-fixture.js';
import { connectNats, type NatsHandle } from '../../usage/src/jetstream/connection.js';
import { JetStreamUsagePublisher } from '../../usage/src/jetstream/publisher.js';
import { openUsageStreamProbe, requireNats, silentLogger, TEST_NATS_URL, uniqueUsageStreamNames, type UsageStreamProbe } from '../../usage/src/testing/nats.js';

/**
 * Shutdown always ends (issue: a predictor stayed alive 50 minutes after SIGTERM under
 * load). Each server gets SIGTERM with requests in flight and its PostgreSQL (and Redis)
 * silent behind a blackholed proxy, the usage-ledger with events flowing and a commit hung
 * on its silent PostgreSQL; `npm start` stops both children and itself, whichever child
 * dies, and SIGKILLs one that does not end by its deadline. No
 * assertion on elapsed time: each wait is on the process's exit, bounded generously so a
 * hang fails the test with the process's output instead of hanging the run.
 */

const GRACE_MS = 1_000;
/** Far past the deadline the processes give themselves (grace + close margin). */
const EXIT_BOUND_MS = GRACE_MS + SHUTDOWN_CLOSE_MARGIN_MS + 15_000;
const ROW = [6.1, 2.8, 4.7, 1.2];
/** test/src/start.ts's KILL_MARGIN_MS: `npm start` SIGKILLs a child still running grace + close margin + this after its SIGTERM (docs/http-api.md: "grace + 4 s"). */
const NPM_START_KILL_MARGIN_MS = 2_000;

/** Resolves with the exit of `managed`, or fails naming what it printed if it is still running after `EXIT_BOUND_MS`. */
async function exitOf(managed: ManagedProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${managed.name} (pid ${managed.pid}) still running ${EXIT_BOUND_MS} ms after SIGTERM\n${managed.output()}`)), EXIT_BOUND_MS);
  });
  try {
    return await Promise.race([managed.exited, bound]);
  } finally {
    clearTimeout(timer);
  }
}

/** The shutdown's own account: `shutdown.forced` with exit 1 when something still hung at its deadline, else `stopped` with exit 0. */
function assertShutdownEnded(managed: ManagedProcess, exit: { code: number | null; signal: NodeJS.Signals | null }, service = managed.name): LogRecord {
  const records = managed.records.filter((record) => record['service'] === service);
  assert.ok(records.some((record) => record.msg === 'shutting down'), `${service} logged no "shutting down"\n${managed.output()}`);
  const forced = records.find((record) => record['event'] === 'shutdown.forced');
  const stopped = records.find((record) => record.msg === 'stopped');
  assert.ok(forced ?? stopped, `${service} logged neither shutdown.forced nor stopped\n${managed.output()}`);
  assert.deepEqual(exit, { code: forced ? 1 : 0, signal: null }, managed.output());
  return (forced ?? stopped)!;
}

/** Polls `check` until it returns a value, failing after `timeoutMs`: waiting on a condition, not for a time. */
async function waitFor<T>(description: string, check: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${description} after ${timeoutMs} ms`);
    await sleep(25);
  }
}

describe('shutdown ends within the grace period, whatever still hangs', { skip: skipUnlessEngines(['postgres', 'redis']) }, () => {
  const predictorSchema = uniqueSchemaName('shutdown_predictor');
  const authSchema = uniqueSchemaName('shutdown_auth');
  const redisPrefix = `test:shutdown:${process.pid}:${Date.now()}:`;
  const proxies: TcpFaultProxy[] = [];
  /** Children of `npm start`, which stopAll does not know. */
  const grandchildren: number[] = [];
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let database: pg.Pool;

  const proxied = async (url: string, defaultPort: number) => {
    const { proxy, url: proxyUrl } = await TcpFaultProxy.forUrl(url, defaultPort);
    proxies.push(proxy);
    return { proxy, url: proxyUrl };
  };

  before(async () => {
    await requirePostgres();
    await requireRedis();
    dataDir = await temporaryDirectory('shutdown');
    database = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2 });
  });

  after(async () => {
    await stopAll();
    for (const pid of grandchildren) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    await Promise.all(proxies.map((proxy) => proxy.close()));
    if (database) {
      for (const schema of [predictorSchema, authSchema]) await database.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await database.end();
    }
    const redis = new Redis(TEST_REDIS_URL);
    const keys: string[] = [];
    for await (const batch of redis.scanStream({ match: `${redisPrefix}*` }) as AsyncIterable<string[]>) keys.push(...batch);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    await dataDir?.remove();
  });

  it('the predictor exits after SIGTERM with keyed predictions in flight and PostgreSQL and Redis silent', async (t) => {
    const auth = await startAuthServer({ dataDir: `${dataDir.path}/predictor-auth` });
    const postgres = await proxied(TEST_DATABASE_URL, 5432);
    const redis = await proxied(TEST_REDIS_URL, 6379);
    const predictor = await startPredictor({
      issuer: auth.issuer,
      dataDir: `${dataDir.path}/predictor`,
      env: {
        DATABASE_URL: postgres.url,
        DATABASE_SCHEMA: predictorSchema,
        REDIS_URL: redis.url,
        REDIS_KEY_PREFIX: redisPrefix,
        SIMULATED_INFERENCE_MS: '2000',
        SHUTDOWN_GRACE_MS: String(GRACE_MS),
      },
    });
    const { status, body } = await requestToken(auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!, { scope: 'predict' });
    assert.equal(status, 200, JSON.stringify(body));
    const token = body['access_token'] as string;

    // Idle keep-alive connections, then predictions that hold their key while the model runs (2 s).
    await Promise.all(Array.from({ length: 4 }, () => fetch(`${predictor.url}/healthz`).then((response) => response.arrayBuffer())));
    const keys = Array.from({ length: 4 }, (_, index) => `shutdown-${process.pid}-${index}`);
    const settled = new Set<string>();
    const predictions = keys.map((key) =>
      fetch(`${predictor.url}/v1/predict`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify({ inputs: [ROW] }),
      })
        .then((response) => response.status, (error: Error) => error.message)
        .finally(() => settled.add(key)),
    );
    // Every key claimed in PostgreSQL: each request is past its claim and inside the model.
    await waitFor('every key claimed', async () => {
      const { rows } = await database.query<{ claimed: string }>(`SELECT count(*) AS claimed FROM "${predictorSchema}".idempotency_keys`);
      return Number(rows[0]!.claimed) >= keys.length || undefined;
    });
    postgres.proxy.set('blackhole');
    redis.proxy.set('blackhole');
    predictor.process.child.kill('SIGTERM');
    const inFlightAtSignal = keys.length - settled.size;

    const exit = await exitOf(predictor.process);
    const last = assertShutdownEnded(predictor.process, exit);
    t.diagnostic(`exit ${exit.code}: ${JSON.stringify({ msg: last.msg, pending: last['pending'], phase: last['phase'] })}; in flight at SIGTERM: ${inFlightAtSignal}`);
    assert.ok(inFlightAtSignal > 0, 'predictions were in flight at SIGTERM');
    if (last['event'] === 'shutdown.forced') assert.ok((last['pending'] as string[]).length > 0, JSON.stringify(last));
    // Whatever they got (a 503, or a closed connection), none is left hanging.
    assert.equal((await Promise.all(predictions)).length, keys.length);
  });

  it('the auth-server exits after SIGTERM under token load with its PostgreSQL silent', async (t) => {
    const postgres = await proxied(TEST_DATABASE_URL, 5432);
    const auth = await startAuthServer({
      dataDir: `${dataDir.path}/auth`,
      // STATE_SYNC_MS: the replica reads the database all the time, so a connection hangs once it goes silent.
      env: { DATABASE_URL: postgres.url, DATABASE_SCHEMA: authSchema, STATE_SYNC_MS: '200', SHUTDOWN_GRACE_MS: String(GRACE_MS) },
    });
    let issued = 0;
    let loading = true;
    const loop = async () => {
      while (loading) {
        const { status } = await requestToken(auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!, { scope: 'predict' });
        if (status === 200) issued += 1;
      }
    };
    const loops = Array.from({ length: 4 }, () => loop().catch(() => {}));
    await waitFor('tokens issued under load', async () => issued >= 20 || undefined);

    postgres.proxy.set('blackhole');
    // A client registration is persisted before it takes effect: it waits on the silent database.
    const registration = new AdminClient(auth.adminUrl, DEV_ENV['ADMIN_TOKEN']!).registerClient({ client_id: 'shutdown-hung', scopes: ['predict'], plan: 'standard' }).catch((error: Error) => error);
    auth.process.child.kill('SIGTERM');

    const exit = await exitOf(auth.process);
    loading = false;
    const last = assertShutdownEnded(auth.process, exit);
    t.diagnostic(`exit ${exit.code}: ${JSON.stringify({ msg: last.msg, pending: last['pending'], phase: last['phase'] })}; tokens issued: ${issued}`);
    await Promise.all([...loops, registration]);
  });

  describe('npm start', () => {
    /** test/src/start.ts as `npm start` runs it (dev.env), on free ports, with its children's pids. */
    async function npmStart(name: string) {
      const ports: number[] = [];
      while (ports.length < 3) {
        const port = await freePort();
        if (!ports.includes(port)) ports.push(port);
      }
      const [authPort, predictorPort, adminPort] = ports.map(String);
      const managed = startTypeScript('npm start', 'test/src/start.ts', {
        ...DEV_ENV,
        AUTH_PORT: authPort!,
        PREDICTOR_PORT: predictorPort!,
        ADMIN_PORT: adminPort!,
        USAGE_ADMIN_PORT: '0',
        METRICS_PORT: '0',
        ISSUER: `http://localhost:${authPort}`,
        DATA_DIR: `${dataDir.path}/${name}/auth`,
        PREDICTOR_DATA_DIR: `${dataDir.path}/${name}/predictor`,
        SHUTDOWN_GRACE_MS: String(GRACE_MS),
      });
      // The children share its stdout; their log lines carry their pid.
      const pidOf = async (service: string) => {
        const listening = await managed.waitForLog((record) => record['service'] === service && record.msg === 'listening', `${service} listening`);
        const pid = listening['pid'] as number;
        grandchildren.push(pid);
        return pid;
      };
      const [authPid, predictorPid] = await Promise.all([pidOf('auth-server'), pidOf('predictor')]);
      assert.ok(isAlive(authPid) && isAlive(predictorPid));
      return { managed, authPid, predictorPid };
    }

    it('SIGTERM stops both servers, then npm start exits 0', async () => {
      const { managed, authPid, predictorPid } = await npmStart('signalled');
      managed.child.kill('SIGTERM');
      const exit = await exitOf(managed);
      assert.deepEqual(exit, { code: 0, signal: null }, managed.output());
      assert.equal(isAlive(authPid), false, 'the auth-server is gone');
      assert.equal(isAlive(predictorPid), false, 'the predictor is gone');
      assertShutdownEnded(managed, { code: 0, signal: null }, 'auth-server');
      assertShutdownEnded(managed, { code: 0, signal: null }, 'predictor');
    });

    it('the auth-server killed outright: npm start stops the predictor and exits 1', async () => {
      const { managed, authPid, predictorPid } = await npmStart('auth-crashed');
      process.kill(authPid, 'SIGKILL');
      const exit = await exitOf(managed);
      assert.deepEqual(exit, { code: 1, signal: null }, managed.output());
      assert.equal(isAlive(predictorPid), false, 'the predictor is gone');
      assertShutdownEnded(managed, { code: 0, signal: null }, 'predictor');
      assert.ok(managed.stderrLines.some((line) => /auth-server exited \(code null, signal SIGKILL\); stopping the rest/.test(line)), managed.output());
    });

    // SIGSTOP: a child that cannot act on its SIGTERM (as if wedged), which no shutdown
    // deadline of its own can end; only npm start's SIGKILL, past that deadline, does.
    it('a child that does not end after SIGTERM: npm start SIGKILLs it past grace + close margin + its kill margin, and exits 1', async () => {
      const { managed, authPid, predictorPid } = await npmStart('wedged');
      process.kill(predictorPid, 'SIGSTOP');
      managed.child.kill('SIGTERM');
      const exit = await exitOf(managed);
      assert.deepEqual(exit, { code: 1, signal: null }, managed.output());
      assert.equal(isAlive(authPid), false, 'the auth-server is gone');
      assert.equal(isAlive(predictorPid), false, 'the predictor is gone');
      assertShutdownEnded(managed, { code: 0, signal: null }, 'auth-server');
      const killAfterMs = GRACE_MS + SHUTDOWN_CLOSE_MARGIN_MS + NPM_START_KILL_MARGIN_MS;
      assert.ok(managed.stderrLines.includes(`start: predictor still running ${killAfterMs} ms after SIGTERM; SIGKILL`), managed.output());
      assert.ok(managed.stderrLines.some((line) => /^start: predictor exited \(code null, signal SIGKILL\)$/.test(line)), managed.output());
      assert.ok(!managed.stderrLines.some((line) => /auth-server .*SIGKILL/.test(line)), 'the auth-server stopped on its own');
      assert.ok(!managed.records.some((record) => record['service'] === 'predictor' && record.msg === 'shutting down'), 'the predictor never ran its shutdown');
    });

    it('a child killed outright: npm start stops the other one and exits 1', async () => {
      const { managed, authPid, predictorPid } = await npmStart('crashed');
      process.kill(predictorPid, 'SIGKILL');
      const exit = await exitOf(managed);
      assert.deepEqual(exit, { code: 1, signal: null }, managed.output());
      assert.equal(isAlive(authPid), false, 'the auth-server is gone');
      assertShutdownEnded(managed, { code: 0, signal: null }, 'auth-server');
      assert.ok(managed.stderrLines.some((line) => /predictor exited \(code null, signal SIGKILL\); stopping the rest/.test(line)), managed.output());
    });
  });
});

describe('the usage-ledger ends within the grace period, whatever still hangs', { skip: skipUnlessEngines(['postgres', 'nats']) }, () => {
  const schema = uniqueSchemaName('shutdown_usage');
  const names = uniqueUsageStreamNames('shutdown');
  const durable = `shutdown-${process.pid}`;
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>> | undefined;
  let database: pg.Pool | undefined;
  let postgres: { proxy: TcpFaultProxy; url: string } | undefined;
  let nats: NatsHandle | undefined;
  let probe: UsageStreamProbe | undefined;

  before(async () => {
    await requirePostgres();
    await requireNats();
    dataDir = await temporaryDirectory('shutdown-usage');
    database = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2 });
    postgres = await TcpFaultProxy.forUrl(TEST_DATABASE_URL, 5432);
    nats = await connectNats({ url: TEST_NATS_URL, name: 'shutdown-test', logger: silentLogger });
  });

  after(async () => {
    await stopAll();
    await postgres?.proxy.close();
    // The stream the ledger created, whether or not the test got as far as its probe.
    const streams = probe ?? (nats ? await openUsageStreamProbe(names.stream) : undefined);
    await streams?.deleteStream();
    await streams?.close();
    await nats?.close();
    if (database) {
      await database.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await database.end();
    }
    await dataDir?.remove();
  });

  it('the usage-ledger exits after SIGTERM with events flowing and a commit hung on its silent PostgreSQL', async (t) => {
    const ledger = await startUsageLedger({
      dataDir: dataDir!.path,
      env: {
        NATS_URL: TEST_NATS_URL,
        USAGE_STREAM: names.stream,
        USAGE_SUBJECT_PREFIX: names.subjectPrefix,
        USAGE_CONSUMER: durable,
        DATABASE_URL: postgres!.url,
        DATABASE_SCHEMA: schema,
        SHUTDOWN_GRACE_MS: String(GRACE_MS),
      },
    });
    probe = await openUsageStreamProbe(names.stream);
    const publisher = new JetStreamUsagePublisher(nats!, names);
    let sequence = 0;
    const publish = async (count: number) => {
      const events = Array.from({ length: count }, () => usageEventFixture(`shutdown-${process.pid}-${(sequence += 1)}`));
      const { failed } = await publisher.publishBatch(events);
      assert.deepEqual(failed, []);
    };
    const recorded = async () => {
      const { rows } = await database!.query<{ recorded: string }>(`SELECT count(*) AS recorded FROM "${schema}".usage_inbox`);
      return Number(rows[0]!.recorded);
    };

    // Events flow: the first ones are recorded and acked, so the ledger is idle on a working database.
    await publish(200);
    await waitFor('the first events recorded and acked', async () => {
      const backlog = await probe!.consumerBacklog(durable);
      return ((await recorded()) === 200 && backlog.pending === 0 && backlog.ackPending === 0) || undefined;
    });

    // The database goes silent and events keep coming: the ledger's next commit hangs, its messages unacked.
    postgres!.proxy.set('blackhole');
    let loading = true;
    const load = (async () => {
      while (loading) await publish(20);
    })();
    let hung: { pending: number; ackPending: number };
    let exit: { code: number | null; signal: NodeJS.Signals | null };
    let report: Promise<number | string>;
    try {
      hung = await waitFor('events delivered to the ledger and not acked', async () => {
        const backlog = await probe!.consumerBacklog(durable);
        return backlog.ackPending > 0 ? backlog : undefined;
      });
      // A report request waits on the same silent database.
      report = fetch(`${ledger.adminUrl}/v1/usage`, { headers: { authorization: `Bearer ${DEV_ENV['ADMIN_TOKEN']!}` } }).then(
        (response) => response.status,
        (error: Error) => error.message,
      );
      ledger.process.child.kill('SIGTERM');
      exit = await exitOf(ledger.process);
    } finally {
      loading = false;
      await load;
    }
    const last = assertShutdownEnded(ledger.process, exit);
    t.diagnostic(`exit ${exit.code}: ${JSON.stringify({ msg: last.msg, pending: last['pending'], phase: last['phase'] })}; at SIGTERM: ${JSON.stringify(hung)}, published: ${sequence}`);
    if (last['event'] === 'shutdown.forced') {
      assert.ok((last['pending'] as string[]).length > 0, JSON.stringify(last));
      // The documented deadline: SHUTDOWN_GRACE_MS plus the close margin.
      assert.equal(last['afterMs'], GRACE_MS + SHUTDOWN_CLOSE_MARGIN_MS, JSON.stringify(last));
    }
    assert.equal(await recorded(), 200, 'nothing was committed through the silent database');
    await report;
  });
});
