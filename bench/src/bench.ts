import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { rmSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { redactUrl } from '@m2m/common';
import { PredictorClient } from 'caller';
import { Redis } from 'ioredis';
import pg from 'pg';
import { requirePostgres, requireRedis, TEST_DATABASE_URL, TEST_REDIS_URL } from '../../predictor/src/testing/engines.js';
import { freePort, REPOSITORY_ROOT, stopAll, temporaryDirectory } from '../../test/src/harness/processes.js';
import { summariseCpuProfile, type CpuProfile, type ProfileSummary } from './cpu-profile.js';
import { DpopCaller, PROOF_HEADROOM, proofsNeeded, type ProofUse } from './dpop-proofs.js';
import { fixedRateLoad } from './fixed-rate.js';
import { stopChild } from './stop-child.js';
import { JETSTREAM_PATH, jetstreamRelayThroughput, RELAY_TARGET_EVENTS_PER_SECOND, sqliteRelayThroughput, type RelayThroughput, type RelayThroughputSkipped } from './relay-throughput.js';
import { answeredOnly200, failedMeasurements, median, roundByRoundRatio, summarise, summariseSameLoad, type Sample, type SameLoadRound } from './summary.js';
import { DEV_ENV, requestToken, startAuthServer, TEST_AUDIENCE } from '../../test/src/harness/system.js';
import { requireNats, TEST_NATS_URL } from '../../usage/src/testing/nats.js';

// npm run bench: A (bare Hono route) / B (the predictor, in-memory and SQLite stores, and
// on Redis + PostgreSQL when those are reachable; in memory with DPoP-bound tokens too, a
// proof per request, dpop-proofs.ts) / C (Express + express-oauth2-jwt-bearer +
// express-rate-limit), interleaved over rounds because a 2-core machine is noisy; load from
// this process with autocannon. Every server runs as the images run it: the bundle
// `npm run build` makes, started with plain `node` (tsx's loader costs about 15% per request).
// After the rounds, the usage relay's throughput from outbox to ledger (relay-throughput.ts).

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '3' },
    connections: { type: 'string', default: '50' },
    out: { type: 'string' },
    profile: { type: 'boolean', default: false },
    'relay-events': { type: 'string', default: '50000' },
  },
});
const rounds = Number(values.rounds);
/** The JSON result; the CPU profiles of `--profile` go beside it. */
const out = values.out ?? join(REPOSITORY_ROOT, '.data', 'bench', 'latest.json');
const durationSeconds = Number(values.duration);
const connections = Number(values.connections);
/** Events in the outbox for each relay throughput measurement. */
const relayEvents = Number(values['relay-events']);
/** Share of B's requests that carry an Idempotency-Key (claim + store + complete). */
const IDEMPOTENT_SHARE = 0.1;
/** The load offered to both A and B for their latency at the same load, as a share of B's throughput. */
const SAME_LOAD_SHARE = 0.5;
const BODY = JSON.stringify({ inputs: [[5.1, 3.5, 1.4, 0.2]] });

type ConfigName = 'A bare hono' | 'B predictor (memory)' | 'B predictor (memory, DPoP)' | 'B predictor (sqlite)' | 'B predictor (dist)' | 'C express stack';
const DIST: ConfigName = 'B predictor (dist)';
/** B (memory) with a DPoP-bound token: a new proof per request, verified (signature, claims, jti replay) on every one. */
const DPOP: ConfigName = 'B predictor (memory, DPoP)';
/** How old a proof may be (the predictor's default DPOP_PROOF_MAX_AGE, set explicitly for the DPoP server): a load must use its pool up within it. */
const DPOP_PROOF_MAX_AGE_SECONDS = 60;

/**
 * The distributed configuration runs on the engines the tests use (TEST_REDIS_URL,
 * TEST_DATABASE_URL) in a schema and key prefix of its own, removed after the run.
 */
const distRun = `bench_${process.pid}_${Date.now().toString(36)}`;
const dist = { redisUrl: TEST_REDIS_URL, databaseUrl: TEST_DATABASE_URL, schema: distRun, redisKeyPrefix: `${distRun}:` };

const children: ChildProcess[] = [];
process.once('exit', () => children.forEach((child) => child.kill('SIGKILL')));

/**
 * The bundles of this run, built by the product's own build script into a folder inside the
 * repository (so the third-party imports resolve from its node_modules), removed afterwards.
 */
const bundles = join(REPOSITORY_ROOT, '.data', 'bench', `dist-${distRun}`);
// Ctrl-C: the servers share the terminal's signal; the bundles would be left behind.
process.once('SIGINT', () => {
  rmSync(bundles, { recursive: true, force: true });
  process.exit(130);
});
const PEERS = { 'bare-hono': 'bench/src/peers/bare-hono.ts', 'express-stack': 'bench/src/peers/express-stack.ts' };

/** The product exactly as `npm run build` makes it for the images, and the peers apart, so they share no chunk with it. */
async function buildBundles(): Promise<void> {
  const build = async (outdir: string, extra: string[]) => {
    const child = spawn(process.execPath, [join(REPOSITORY_ROOT, 'scripts', 'build.mjs'), '--outdir', outdir, ...extra], { cwd: REPOSITORY_ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    if (code !== 0) throw new Error(`bench: npm run build failed (exit ${code})`);
  };
  await build(join(bundles, 'product'), []);
  await build(join(bundles, 'peers'), Object.entries(PEERS).flatMap(([name, source]) => ['--entry', `${name}=${source}`]));
}

/** Starts a bundle with its output discarded (logging still happens), and waits until `readyPath` answers. */
async function startServer(bundle: 'predictor' | keyof typeof PEERS, env: Record<string, string>, port: number, readyPath: string, readyStatus = 200, nodeArgs: string[] = []): Promise<ChildProcess> {
  const entry = join(bundles, bundle === 'predictor' ? 'product' : 'peers', `${bundle}.js`);
  const child = spawn(process.execPath, [...nodeArgs, entry], { cwd: REPOSITORY_ROOT, env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(child);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const status = await fetch(`http://127.0.0.1:${port}${readyPath}`, { method: readyPath === '/v1/predict' ? 'POST' : 'GET' }).then((response) => response.status, () => 0);
    if (status === readyStatus) return child;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`${entry} did not become ready on port ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** `perRequest`: headers of one request (a DPoP proof), asked for every request autocannon builds. */
function load(url: string, headers: Record<string, string>, idempotentShare = 0, body = BODY, perRequest?: () => Record<string, string>): Promise<Omit<Sample, 'cpuMicros'>> {
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url,
        method: 'POST',
        connections,
        duration: durationSeconds,
        headers: { 'content-type': 'application/json', ...headers },
        body,
        requests: [
          {
            setupRequest: (request) => {
              const extra = { ...(Math.random() < idempotentShare ? { 'idempotency-key': randomUUID() } : {}), ...perRequest?.() };
              return Object.keys(extra).length > 0 ? { ...request, headers: { ...request.headers, ...extra } } : request;
            },
          },
        ],
      },
      (error, result) => {
        if (error) return reject(error);
        resolve({ rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, requests: result.requests.total, non200: answersOtherThan200(result.statusCodeStats), errors: result.errors + result.timeouts });
      },
    );
    void instance;
  });
}

function answersOtherThan200(statusCodeStats: Record<string, { count?: number }> | undefined): number {
  return Object.entries(statusCodeStats ?? {}).reduce((sum, [status, { count }]) => sum + (status === '200' ? 0 : (count ?? 0)), 0);
}

/** Why the distributed configuration cannot run here, or undefined when both engines answer. */
async function distributedUnavailable(): Promise<string | undefined> {
  const missing = (await Promise.allSettled([requireRedis(dist.redisUrl), requirePostgres(dist.databaseUrl)]))
    .flatMap((outcome) => (outcome.status === 'rejected' ? [(outcome.reason as Error).message] : []));
  return missing.length > 0 ? missing.join('; ') : undefined;
}

/** Why the relay's JetStream path cannot be measured here (PostgreSQL or NATS missing), or undefined. */
async function relayJetStreamUnavailable(): Promise<string | undefined> {
  const missing = (await Promise.allSettled([requirePostgres(dist.databaseUrl), requireNats(TEST_NATS_URL)]))
    .flatMap((outcome) => (outcome.status === 'rejected' ? [(outcome.reason as Error).message] : []));
  return missing.length > 0 ? missing.join('; ') : undefined;
}

/**
 * The relay from outbox to ledger, each path in turn while the servers idle: the embedded
 * default, then PostgreSQL → JetStream → the usage-ledger process (this run's bundle) →
 * PostgreSQL, in a schema and stream of its own, removed afterwards.
 */
async function measureRelay(dir: string): Promise<Array<RelayThroughput | RelayThroughputSkipped>> {
  const sqlite = await sqliteRelayThroughput({ events: relayEvents, dir });
  const unavailable = await relayJetStreamUnavailable();
  if (unavailable !== undefined) return [sqlite, { path: JETSTREAM_PATH, skipped: true, reason: unavailable }];
  const viaJetStream = await jetstreamRelayThroughput({
    events: relayEvents,
    databaseUrl: dist.databaseUrl,
    natsUrl: TEST_NATS_URL,
    schema: `${distRun}_relay`,
    stream: `${distRun}_relay`.toUpperCase(),
    usageLedger: { command: process.execPath, args: [join(bundles, 'product', 'usage-ledger.js')], cwd: REPOSITORY_ROOT, port: await freePort() },
  });
  return [sqlite, viaJetStream];
}

function relayLine(result: RelayThroughput | RelayThroughputSkipped): string {
  if (result.skipped) return `${result.path}: skipped (${result.reason})`;
  const verdict = result.meetsTarget ? 'meets' : 'BELOW';
  return `${result.path}: ${result.eventsPerSecond} events/s (${result.events} in ${result.seconds} s; outbox empty after ${result.drainedSeconds} s) — ${verdict} the target`;
}

/** Drops this run's schema and deletes its Redis keys; returns what it removed. */
async function removeDistributedState(): Promise<string> {
  const database = new pg.Client({ connectionString: dist.databaseUrl, connectionTimeoutMillis: 5_000 });
  database.on('error', () => {});
  try {
    await database.connect();
    await database.query(`DROP SCHEMA IF EXISTS "${dist.schema}" CASCADE`);
  } finally {
    await database.end().catch(() => {});
  }
  const redis = new Redis(dist.redisUrl, { lazyConnect: true, connectTimeout: 5_000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on('error', () => {});
  let deleted = 0;
  try {
    await redis.connect();
    for await (const keys of redis.scanStream({ match: `${dist.redisKeyPrefix}*`, count: 1_000 }) as AsyncIterable<string[]>) {
      if (keys.length > 0) deleted += await redis.del(...keys);
    }
  } finally {
    redis.disconnect();
  }
  return `schema ${dist.schema} dropped, ${deleted} Redis key(s) under ${dist.redisKeyPrefix} deleted`;
}

/**
 * What the caller library adds per call over a bare fetch of the same request, as CPU time of
 * this process (the stub answering runs here too, the same for both): wall time would mostly
 * measure the scheduler on a shared 2-core VM.
 */
async function callerOverheadMicros(): Promise<number> {
  const response = JSON.stringify({ id: 'x', model: 'm', created: 0, predictions: [] });
  const stub = createServer((request, reply) => {
    request.resume();
    request.on('end', () => reply.writeHead(200, { 'content-type': 'application/json' }).end(response));
  });
  await new Promise<void>((resolve) => stub.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(stub.address() as AddressInfo).port}`;
  const token = { value: 'token', cacheKey: 'k', scope: 'predict', requestedAt: 0, expiresAt: Number.POSITIVE_INFINITY, refreshAt: Number.POSITIVE_INFINITY };
  const client = new PredictorClient({ baseUrl: url, tokens: { getToken: async () => token, invalidate: () => {} } });
  const calls = 2_000;
  const cpuMillis = () => {
    const { user, system } = process.cpuUsage();
    return (user + system) / 1000;
  };
  const timeRaw = async () => {
    const started = cpuMillis();
    for (let i = 0; i < calls; i += 1) {
      const reply = await fetch(`${url}/v1/predict`, { method: 'POST', headers: { authorization: 'Bearer token', 'content-type': 'application/json', 'idempotency-key': randomUUID() }, body: BODY });
      await reply.json();
    }
    return cpuMillis() - started;
  };
  const timeClient = async () => {
    const started = cpuMillis();
    for (let i = 0; i < calls; i += 1) await client.predict([[5.1, 3.5, 1.4, 0.2]]);
    return cpuMillis() - started;
  };
  await timeRaw(); // warm-up
  await timeClient();
  const samples: number[] = [];
  for (let i = 0; i < 5; i += 1) samples.push(((await timeClient()) - (await timeRaw())) / calls);
  await new Promise<void>((resolve) => stub.close(() => resolve()));
  return Math.max(0, median(samples) * 1000);
}

/** The caller's pacing is measured on a plan of the `standard` shape (burst = 3 s of the rate), ten times faster so that a few refills fit in seconds. */
const PACING_PLAN = { burst: 300, refillPerSecond: 100 };
const PACING_CONCURRENCY = 20;
/** Share of the plan's sustained rate the paced caller should reach after the burst. */
const PACING_GOAL = 0.9;

interface CallerPacing {
  plan: typeof PACING_PLAN;
  concurrency: number;
  calls: number;
  attempts: number;
  answered429: number;
  failed: number;
  seconds: number;
  /** Calls per second after the burst, and that as a share of the plan's sustained rate. */
  ratePerSecond: number;
  shareOfPlan: number;
  meetsGoal: boolean;
}

/**
 * The caller library paced by the predictor's rate-limit fields (caller/src/limits/): calls at
 * PACING_CONCURRENCY against a predictor on PACING_PLAN, for three refills per second of
 * `--duration` after the burst. Says how close to the plan's sustained rate it gets, and how
 * many attempts were refused anyway.
 */
async function callerPacing(token: string, startPredictor: (plan: typeof PACING_PLAN) => Promise<{ url: string; server: ChildProcess }>): Promise<CallerPacing> {
  const { url, server } = await startPredictor(PACING_PLAN);
  try {
    const bearer = { value: token, cacheKey: 'k', scope: 'predict', requestedAt: 0, expiresAt: Number.POSITIVE_INFINITY, refreshAt: Number.POSITIVE_INFINITY };
    const counts = { attempts: 0, answered429: 0, failed: 0 };
    const client = new PredictorClient({
      baseUrl: url,
      tokens: { getToken: async () => bearer, invalidate: () => {} },
      maxAttempts: 10,
      onAttempt: (event) => {
        counts.attempts += 1;
        if (event.status === 429) counts.answered429 += 1;
      },
    });
    const calls = PACING_PLAN.burst + PACING_PLAN.refillPerSecond * 3 * durationSeconds;
    let next = 0;
    const worker = async () => {
      while (next++ < calls) await client.predict([[5.1, 3.5, 1.4, 0.2]]).catch(() => (counts.failed += 1));
    };
    const started = performance.now();
    await Promise.all(Array.from({ length: PACING_CONCURRENCY }, worker));
    const seconds = (performance.now() - started) / 1000;
    const ratePerSecond = (calls - PACING_PLAN.burst) / seconds;
    const shareOfPlan = ratePerSecond / PACING_PLAN.refillPerSecond;
    const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits;
    return { plan: PACING_PLAN, concurrency: PACING_CONCURRENCY, calls, ...counts, seconds: round(seconds, 2), ratePerSecond: round(ratePerSecond, 1), shareOfPlan: round(shareOfPlan, 3), meetsGoal: shareOfPlan >= PACING_GOAL };
  } finally {
    await stopChild(server);
  }
}

function pacingLine(pacing: CallerPacing): string {
  const { plan } = pacing;
  return (
    `caller pacing (plan burst ${plan.burst}, ${plan.refillPerSecond}/s; ${pacing.calls} calls, ${pacing.concurrency} concurrent): ` +
    `${pacing.ratePerSecond} calls/s after the burst = ${Math.round(pacing.shareOfPlan * 100)}% of the sustained rate (goal ≥ ${PACING_GOAL * 100}%: ${pacing.meetsGoal ? 'meets' : 'BELOW'}), ` +
    `${pacing.answered429} of ${pacing.attempts} attempts answered 429, ${pacing.failed} failed`
  );
}

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ, 100 on every Linux this runs on

/** CPU time (user + system) a process has used so far, in µs, from /proc. */
async function cpuMicros(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // The fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND) * 1e6;
}

async function residentMemoryMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kib = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  return Math.round((kib / 1024) * 10) / 10;
}

type ServerProfile = ProfileSummary & { file: string; requests: number; cpuMicrosPerRequest: number };

/**
 * Each concern in CPU µs per request, A beside B (memory), largest difference first: the
 * profile gives the shares, /proc the CPU time they divide (the sampler's clock is wall time).
 */
function profileLines(profile: { a: ServerProfile; b: ServerProfile }): string[] {
  const perRequest = (server: ServerProfile, concern: string) => ((server.concerns.find((entry) => entry.concern === concern)?.share ?? 0) / 100) * server.cpuMicrosPerRequest;
  const concerns = [...new Set([...profile.b.concerns, ...profile.a.concerns].map((entry) => entry.concern))]
    .map((concern) => ({ concern, a: perRequest(profile.a, concern), b: perRequest(profile.b, concern) }))
    .sort((x, y) => y.b - y.a - (x.b - x.a));
  const row = (label: string, a: number, b: number) => `| ${label} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(b - a).toFixed(1)} |`;
  return [
    '',
    'CPU profile (node --cpu-prof for the shares, /proc for the CPU time; µs per request under profiling, start-up left out):',
    '',
    '| concern | A bare hono | B predictor (memory) | B − A |',
    '|---|---|---|---|',
    ...concerns.map(({ concern, a, b }) => row(concern, a, b)),
    row('**total**', profile.a.cpuMicrosPerRequest, profile.b.cpuMicrosPerRequest),
    '',
    `hottest functions of B (share of its busy time); the trees: ${profile.a.file}, ${profile.b.file} (DevTools)`,
    ...profile.b.hottest.map(({ fn, where, share }) => `  ${share.toFixed(1).padStart(5)}%  ${fn} ${where}`),
  ];
}

/** Before starting anything: the distributed configuration runs only where both engines answer. */
const distSkipped = await distributedUnavailable();
const data = await temporaryDirectory('bench');
try {
  await buildBundles();
  const auth = await startAuthServer({ dataDir: `${data.path}/auth`, env: { ACCESS_TOKEN_TTL: '86400' } });
  const token = (await requestToken(auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!)).body['access_token'] as string;
  const plans = `${data.path}/plans.json`;
  // A plan large enough never to refuse: the bench measures the checks, not the refusals.
  await writeFile(plans, JSON.stringify({ plans: { standard: { burst: 1e12, refillPerSecond: 1e12, dailyQuota: 1e14 } }, defaultPlan: 'standard' }));
  const predictorEnv = (store: string, dir: string, port: number) => ({ PREDICTOR_PORT: String(port), METRICS_PORT: '0', ISSUER: auth.issuer, PREDICTOR_AUDIENCE: TEST_AUDIENCE, PLANS_FILE: plans, IDEMPOTENCY_STORE: store, PREDICTOR_DATA_DIR: dir, API_KEYS: 'false' });
  /**
   * `--profile`: one more A and one more B (memory) under `node --cpu-prof`, loaded like the
   * others after the rounds, so the sampling never slows a measured configuration. The profiles
   * are kept for DevTools; the summary puts each concern in µs per request, A beside B.
   */
  const profileServer = async (bundle: 'bare-hono' | 'predictor', headers: Record<string, string>, idempotentShare: number) => {
    const port = await freePort();
    const profileDir = `${data.path}/profile-${bundle}`;
    const env = bundle === 'predictor' ? predictorEnv('memory', `${data.path}/b-profiled`, port) : { BENCH_PORT: String(port) };
    const server = await startServer(bundle, env, port, bundle === 'predictor' ? '/readyz' : '/healthz', 200, ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]);
    const url = `http://127.0.0.1:${port}/v1/predict`;
    // The profile spans both loads (the warm-up too), and so does the CPU time taken from /proc.
    const cpuBefore = await cpuMicros(server.pid!);
    let requests = 0;
    for (let run = 0; run < 2; run += 1) {
      const measured = await load(url, headers, idempotentShare);
      if (!answeredOnly200(measured)) throw new Error(`the profiled ${bundle} answered something other than 200 (${measured.non200} not 200, ${measured.errors} errors)`);
      requests += measured.requests;
    }
    const cpuMicrosPerRequest = ((await cpuMicros(server.pid!)) - cpuBefore) / Math.max(1, requests);
    await stopChild(server); // a normal exit writes the profile
    const [file] = await readdir(profileDir).catch(() => []);
    if (!file) throw new Error(`the profiled ${bundle} wrote no profile`);
    const text = await readFile(join(profileDir, file), 'utf8');
    const kept = join(dirname(out), `${bundle}.cpuprofile`);
    await mkdir(dirname(kept), { recursive: true });
    await writeFile(kept, text);
    const isApplication = (scriptUrl: string) => scriptUrl.includes(bundles);
    return { file: kept, requests, cpuMicrosPerRequest, ...summariseCpuProfile(JSON.parse(text) as CpuProfile, isApplication) };
  };
  /** A failed profile costs its table, not the measured rounds. */
  const profileBoth = async () => {
    try {
      return { a: await profileServer('bare-hono', {}, 0), b: await profileServer('predictor', { authorization: `Bearer ${token}` }, IDEMPOTENT_SHARE) };
    } catch (error) {
      process.stderr.write(`bench: --profile failed: ${(error as Error).message}\n`);
      process.exitCode = 1;
      return undefined;
    }
  };

  const ports = { a: await freePort(), bMemory: await freePort(), bDpop: await freePort(), bSqlite: await freePort(), bDist: await freePort(), c: await freePort() };
  const serverA = await startServer('bare-hono', { BENCH_PORT: String(ports.a) }, ports.a, '/healthz');
  const bMemory = await startServer('predictor', predictorEnv('memory', `${data.path}/b-memory`, ports.bMemory), ports.bMemory, '/readyz');
  // The DPoP predictor's public URL is the address the load goes to: the proofs' htu is it plus /v1/predict.
  const dpopUrl = `http://127.0.0.1:${ports.bDpop}/v1/predict`;
  const dpopEnv = { PREDICTOR_PUBLIC_URL: `http://127.0.0.1:${ports.bDpop}`, DPOP_PROOF_MAX_AGE: String(DPOP_PROOF_MAX_AGE_SECONDS) };
  const bDpop = await startServer('predictor', { ...predictorEnv('memory', `${data.path}/b-dpop`, ports.bDpop), ...dpopEnv }, ports.bDpop, '/readyz');
  const dpopCaller = await DpopCaller.create({ issuer: auth.issuer, clientId: 'demo-caller', secret: DEV_ENV['DEMO_CALLER_SECRET']!, htu: dpopUrl });
  if (durationSeconds > DPOP_PROOF_MAX_AGE_SECONDS / 2) {
    process.stderr.write(`bench: --duration ${durationSeconds} s: the proofs made before a load of ${DPOP} may be older than ${DPOP_PROOF_MAX_AGE_SECONDS} s before it ends (refused, counted as not 200)\n`);
  }
  const bSqlite = await startServer('predictor', predictorEnv('sqlite', `${data.path}/b-sqlite`, ports.bSqlite), ports.bSqlite, '/readyz');
  let bDist: ChildProcess | undefined;
  if (distSkipped === undefined) {
    const distEnv = { RATE_LIMIT_STORE: 'redis', REDIS_URL: dist.redisUrl, REDIS_KEY_PREFIX: dist.redisKeyPrefix, DATABASE_URL: dist.databaseUrl, DATABASE_SCHEMA: dist.schema };
    bDist = await startServer('predictor', { ...predictorEnv('postgres', `${data.path}/b-dist`, ports.bDist), ...distEnv }, ports.bDist, '/readyz');
  }
  const serverC = await startServer('express-stack', { BENCH_PORT: String(ports.c), ISSUER: auth.issuer, PREDICTOR_AUDIENCE: TEST_AUDIENCE }, ports.c, '/v1/predict', 401);

  const bearer = { authorization: `Bearer ${token}` };
  type Config = { name: ConfigName; url: string; headers: Record<string, string>; idempotentShare: number; server: ChildProcess; dpop?: DpopCaller };
  // A and B (memory) first: the latency at the same load below takes them as configs[0] and configs[1].
  const configs: Config[] = [
    { name: 'A bare hono', url: `http://127.0.0.1:${ports.a}/v1/predict`, headers: {}, idempotentShare: 0, server: serverA },
    { name: 'B predictor (memory)', url: `http://127.0.0.1:${ports.bMemory}/v1/predict`, headers: bearer, idempotentShare: IDEMPOTENT_SHARE, server: bMemory },
    { name: DPOP, url: dpopUrl, headers: dpopCaller.authorization, idempotentShare: IDEMPOTENT_SHARE, server: bDpop, dpop: dpopCaller },
    { name: 'B predictor (sqlite)', url: `http://127.0.0.1:${ports.bSqlite}/v1/predict`, headers: bearer, idempotentShare: IDEMPOTENT_SHARE, server: bSqlite },
    ...(bDist ? [{ name: DIST, url: `http://127.0.0.1:${ports.bDist}/v1/predict`, headers: bearer, idempotentShare: IDEMPOTENT_SHARE, server: bDist }] : []),
    { name: 'C express stack', url: `http://127.0.0.1:${ports.c}/v1/predict`, headers: bearer, idempotentShare: 0, server: serverC },
  ];
  const samples = new Map<ConfigName, Sample[]>(configs.map((config) => [config.name, []]));
  /** The DPoP configuration's proofs, load by load: the warm-up, then round by round. */
  const proofUse: { warmUp?: ProofUse; rounds: ProofUse[] } = { rounds: [] };
  /**
   * One load of a configuration, with the server's CPU time per request. A DPoP one first gets
   * its proofs, enough for `expectedRps` with headroom, made before the CPU time is read and the
   * load starts; each request takes the next one, and once they are used up the rest go without.
   */
  const measure = async (config: Config, expectedRps: number): Promise<{ sample: Sample; proofs?: ProofUse }> => {
    const prepared = config.dpop ? await config.dpop.pool(proofsNeeded(expectedRps, durationSeconds, connections)) : undefined;
    const withProof = prepared && ((): Record<string, string> => {
      const proof = prepared.pool.take();
      return proof === undefined ? {} : { dpop: proof };
    });
    const cpuBefore = await cpuMicros(config.server.pid!);
    const measured = await load(config.url, config.headers, config.idempotentShare, BODY, withProof);
    const sample: Sample = { ...measured, cpuMicros: ((await cpuMicros(config.server.pid!)) - cpuBefore) / Math.max(1, measured.requests) };
    if (!prepared) return { sample };
    const { pool, seconds } = prepared;
    return { sample, proofs: { made: pool.size, generationSeconds: Math.round(seconds * 100) / 100, handedOut: pool.handedOut, dry: pool.dry } };
  };
  const proofLine = (proofs: ProofUse) => `; ${proofs.made} proofs made in ${proofs.generationSeconds} s before the load, ${proofs.handedOut} handed out${proofs.dry ? `, RAN DRY: ${proofs.dry} requests sent without a proof` : ''}`;
  /** A load's throughput, to size the next pool of proofs by (the total over the duration: the per-second average leaves out the last part-second). */
  const throughput = (sample: Sample) => Math.max(sample.rps, sample.requests / durationSeconds);
  const warmUp = new Map<ConfigName, number>();
  for (const config of configs) {
    // JIT, caches; not counted. The DPoP pool of the warm-up is sized by B (memory) with bearer tokens, which comes before it and does less.
    const { sample, proofs } = await measure(config, warmUp.get('B predictor (memory)') ?? 0);
    warmUp.set(config.name, throughput(sample));
    if (proofs) {
      proofUse.warmUp = proofs;
      if (proofs.dry) process.stderr.write(`warm-up ${config.name}${proofLine(proofs)}\n`);
    }
  }
  // p99 "at the same load": A and B (memory) offered the same evenly spaced requests, at half
  // of what B sustained in the warm-up. Under the saturating load above, each one's latency is
  // mostly its own queue (50 connections over its throughput), which says little about B's work.
  const sameLoadRate = Math.max(100, Math.round((warmUp.get('B predictor (memory)')! * SAME_LOAD_SHARE) / 100) * 100);
  const sameLoadRounds: SameLoadRound[] = [];
  const idempotencyKeyOnAShare = (share: number): Record<string, string> => (Math.random() < share ? { 'idempotency-key': randomUUID() } : {});
  for (let round = 1; round <= rounds; round += 1) {
    for (const config of configs) {
      // A DPoP pool is sized by the previous round's throughput (the warm-up's in round 1).
      const previous = samples.get(config.name)!.at(-1);
      const { sample, proofs } = await measure(config, previous ? throughput(previous) : warmUp.get(config.name)!);
      samples.get(config.name)!.push(sample);
      if (proofs) proofUse.rounds.push(proofs);
      process.stderr.write(`round ${round} ${config.name.padEnd(22)} ${Math.round(sample.rps)} req/s, p99 ${sample.p99} ms, ${Math.round(sample.cpuMicros)} µs CPU/request${sample.non200 || sample.errors ? `, ${sample.non200} not 200, ${sample.errors} errors` : ''}${proofs ? proofLine(proofs) : ''}\n`);
    }
    const atSameLoad = (config: (typeof configs)[number]) =>
      fixedRateLoad({ url: config.url, headers: { 'content-type': 'application/json', ...config.headers }, body: BODY, rate: sameLoadRate, seconds: durationSeconds, perRequestHeaders: () => idempotencyKeyOnAShare(config.idempotentShare) });
    // A first in odd rounds, B first in even ones (properties are evaluated in the order written):
    // neither always follows C's saturating load.
    const sameLoad: SameLoadRound =
      round % 2 ? { a: await atSameLoad(configs[0]!), b: await atSameLoad(configs[1]!) } : { b: await atSameLoad(configs[1]!), a: await atSameLoad(configs[0]!) };
    sameLoadRounds.push(sameLoad);
    process.stderr.write(`round ${round} at ${sameLoadRate} req/s     A p99 ${sameLoad.a.p99.toFixed(2)} ms, B (memory) p99 ${sameLoad.b.p99.toFixed(2)} ms\n`);
  }
  const sameLoad = summariseSameLoad(sameLoadRate, sameLoadRounds);
  const clientCredentials = { authorization: `Basic ${Buffer.from(`demo-caller:${DEV_ENV['DEMO_CALLER_SECRET']!}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' };
  const tokenSample = await load(`${auth.issuer}/token`, clientCredentials, 0, 'grant_type=client_credentials&scope=predict').catch(() => undefined);
  const memoryMiB = await residentMemoryMiB(bMemory.pid!);
  const overheadMicros = await callerOverheadMicros();
  const pacing = await callerPacing(token, async (plan) => {
    const dir = `${data.path}/pacing`;
    await mkdir(dir, { recursive: true });
    await writeFile(`${dir}/plans.json`, JSON.stringify({ plans: { standard: { ...plan, dailyQuota: 1e12 } }, defaultPlan: 'standard' }));
    const port = await freePort();
    const server = await startServer('predictor', { ...predictorEnv('memory', `${dir}/predictor`, port), PLANS_FILE: `${dir}/plans.json` }, port, '/readyz');
    return { url: `http://127.0.0.1:${port}`, server };
  }).catch((error: unknown) => {
    process.stderr.write(`bench: the caller pacing measurement failed: ${(error as Error).message}\n`);
    process.exitCode = 1;
    return undefined;
  });
  const relay = await measureRelay(`${data.path}/relay`).catch((error: unknown) => {
    process.stderr.write(`bench: the relay measurement failed: ${(error as Error).message}\n`);
    process.exitCode = 1;
    return undefined;
  });
  for (const result of relay ?? []) process.stderr.write(`relay: ${relayLine(result)}\n`);
  const profile = values.profile ? await profileBoth() : undefined;

  const summary = configs.map(({ name }) => summarise(name, samples.get(name)!));
  const rowOf = (name: ConfigName) => summary.find((candidate) => candidate.name === name)!;
  const ratio = (numerator: ConfigName, denominator: ConfigName) => roundByRoundRatio(samples.get(numerator)!, samples.get(denominator)!);
  const result = {
    date: new Date().toISOString(),
    machine: { cores: cpus().length, cpu: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
    settings: { rounds, durationSeconds, connections, idempotentShare: IDEMPOTENT_SHARE },
    // The configurations every machine runs; the distributed one, which needs Redis and PostgreSQL, is apart.
    configurations: summary.filter(({ name }) => name !== DIST && name !== DPOP),
    distributed:
      distSkipped === undefined
        ? { ...rowOf(DIST), skipped: false as const, engines: { redis: redactUrl(dist.redisUrl), postgres: redactUrl(dist.databaseUrl) }, schema: dist.schema, redisKeyPrefix: dist.redisKeyPrefix }
        : { name: DIST, skipped: true as const, reason: distSkipped },
    // B (memory) with DPoP-bound tokens, apart like the distributed one: its proofs, load by load.
    dpop: {
      ...rowOf(DPOP),
      htu: dpopUrl,
      proofMaxAgeSeconds: DPOP_PROOF_MAX_AGE_SECONDS,
      proofs: { headroom: PROOF_HEADROOM, warmUp: proofUse.warmUp, rounds: proofUse.rounds, ranDry: [proofUse.warmUp, ...proofUse.rounds].reduce((sum, use) => sum + (use?.dry ?? 0), 0) },
    },
    sameLoad,
    ratios: {
      'B/A (memory)': ratio('B predictor (memory)', 'A bare hono'),
      'B/A (sqlite)': ratio('B predictor (sqlite)', 'A bare hono'),
      'B/A (dist)': distSkipped === undefined ? ratio(DIST, 'A bare hono') : null,
      'B/C (memory)': ratio('B predictor (memory)', 'C express stack'),
      'CPU per request B/A (memory)': Math.round((rowOf('B predictor (memory)').cpuMicrosPerRequest / Math.max(1, rowOf('A bare hono').cpuMicrosPerRequest)) * 100) / 100,
      'p99 B/A (memory) at the same load': sameLoad.p99Ratio,
      'p99 B/A (memory) saturated': Math.round((rowOf('B predictor (memory)').p99 / Math.max(1, rowOf('A bare hono').p99)) * 100) / 100,
      'B DPoP/B bearer (memory)': ratio(DPOP, 'B predictor (memory)'),
      'CPU per request B DPoP/B bearer (memory)': Math.round((rowOf(DPOP).cpuMicrosPerRequest / Math.max(1, rowOf('B predictor (memory)').cpuMicrosPerRequest)) * 100) / 100,
    },
    tokenIssuance: tokenSample && { tokensPerSecond: Math.round(tokenSample.rps), allOk: answeredOnly200(tokenSample) },
    callerOverheadMicrosPerCall: Math.round(overheadMicros),
    callerPacing: pacing,
    predictorResidentMemoryMiB: memoryMiB,
    relay: relay && { targetEventsPerSecond: RELAY_TARGET_EVENTS_PER_SECOND, events: relayEvents, paths: relay },
    ...(profile ? { profile } : {}),
  };

  const lines = [
    `bench ${result.date.slice(0, 10)} — ${result.machine.cores} cores, ${result.machine.cpu}, Node ${result.machine.node}; ${rounds} round${rounds === 1 ? '' : 's'} × ${durationSeconds} s, ${connections} connections`,
    '',
    '| configuration | req/s median (min–max) | p50 ms | p99 ms | server CPU µs/request | every answer 200 |',
    '|---|---|---|---|---|---|',
    ...summary.map((row) => `| ${row.name} | ${row.rps.median} (${row.rps.min}–${row.rps.max}) | ${row.p50} | ${row.p99} | ${row.cpuMicrosPerRequest} | ${row.allOk ? 'yes' : 'NO'} |`),
    ...(distSkipped === undefined ? [] : ['', `${DIST} skipped: ${distSkipped}`]),
    '',
    `ratios (round by round, median): ${Object.entries(result.ratios).flatMap(([name, value]) => (value === null ? [] : [`${name} ${value}`])).join(', ')}`,
    `latency at the same load (${sameLoad.rate} req/s offered to both, evenly spaced): A p50 ${sameLoad.a.p50} ms, p99 ${sameLoad.a.p99} ms; B (memory) p50 ${sameLoad.b.p50} ms, p99 ${sameLoad.b.p99} ms`,
    `token issuance: ${result.tokenIssuance?.tokensPerSecond ?? '?'} tokens/s; caller overhead: ${result.callerOverheadMicrosPerCall} µs/call; predictor RSS after the run: ${memoryMiB} MiB`,
    pacing ? pacingLine(pacing) : 'caller pacing: failed (see stderr)',
    `usage relay, outbox to ledger (${relayEvents} events each, target ≥ ${RELAY_TARGET_EVENTS_PER_SECOND} events/s):`,
    ...(relay ? relay.map((result) => `  ${relayLine(result)}`) : ['  failed (see stderr)']),
    ...(profile ? profileLines(profile) : []),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`\nwritten to ${out}\n`);
  const failures = failedMeasurements(summary, result.tokenIssuance, sameLoad);
  proofUse.rounds.forEach((use, index) => {
    if (use.dry) failures.push(`${DPOP}: its ${use.made} proofs ran out in round ${index + 1}, ${use.dry} requests went without one (refused): more headroom (PROOF_HEADROOM in bench/src/dpop-proofs.ts)`);
  });
  for (const failure of failures) process.stderr.write(`bench: ${failure}\n`);
  if (failures.length > 0) process.exitCode = 1;
} finally {
  // Every server gone before the engines are cleaned, so none writes a key or a row afterwards.
  await Promise.allSettled([...children.map(stopChild), stopAll()]);
  if (distSkipped === undefined) {
    await removeDistributedState().then(
      (removed) => process.stderr.write(`bench: ${removed}\n`),
      (error: unknown) => {
        process.stderr.write(`bench: could not clean up after ${DIST} (${(error as Error).message}): drop schema ${dist.schema} and delete the Redis keys ${dist.redisKeyPrefix}* by hand\n`);
        process.exitCode = 1;
      },
    );
  }
  await Promise.allSettled([data.remove(), rm(bundles, { recursive: true, force: true })]);
}
