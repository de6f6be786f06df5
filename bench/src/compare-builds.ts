import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { freePort, stopAll, temporaryDirectory } from '../../test/src/harness/processes.js';
import { DEV_ENV, requestToken, startAuthServer, TEST_AUDIENCE } from '../../test/src/harness/system.js';
import { median } from './summary.js';
import { stopChild } from './stop-child.js';

// `npx tsx bench/src/compare-builds.ts --build before=<dir>/predictor.js --build after=<dir>/predictor.js`:
// the bench's configuration B on SQLite (JWT, 10% of requests with an Idempotency-Key, 50
// connections), once per predictor bundle given (each built by `npm run build -- --outdir
// <somewhere inside its checkout>`, so its third-party imports resolve), loaded in turn with the
// order rotating each round; req/s and the server's CPU µs per request, and each build's req/s
// as a ratio of the first build's, round by round (on a shared 2-core machine req/s moves
// between rounds; the ratio within a round much less). The CPU time per request is the
// process's, with its main thread's apart; `--threads` prints every thread's share (the usage
// relay thread is the busiest one besides main). `--cpu-prof`: each server under
// `node --cpu-prof`, the profiles in `--cpu-prof-dir` (one per thread).

const { values } = parseArgs({
  options: {
    build: { type: 'string', multiple: true, default: [] },
    rounds: { type: 'string', default: '8' },
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '5' },
    connections: { type: 'string', default: '50' },
    'cpu-prof': { type: 'boolean', default: false },
    threads: { type: 'boolean', default: false },
    'cpu-prof-dir': { type: 'string', default: '.data/bench/compare-profiles' },
  },
});
const builds = values.build.map((spec) => {
  const separator = spec.indexOf('=');
  if (separator <= 0) throw new Error(`--build takes <name>=<path to predictor.js>, got ${spec}`);
  return { name: spec.slice(0, separator), bundle: spec.slice(separator + 1) };
});
if (builds.length === 0) throw new Error('give at least one --build <name>=<path to predictor.js>');
const rounds = Number(values.rounds);
const durationSeconds = Number(values.duration);
const connections = Number(values.connections);
const IDEMPOTENT_SHARE = 0.1;
const BODY = JSON.stringify({ inputs: [[5.1, 3.5, 1.4, 0.2]] });
const CLOCK_TICKS_PER_SECOND = 100;

async function cpuMicros(pid: number, file = `/proc/${pid}/stat`): Promise<number> {
  const stat = await readFile(file, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND) * 1e6;
}

/** CPU time of each thread of the process (µs), by thread id: the main thread's id is the pid. */
async function threadCpuMicros(pid: number): Promise<Map<string, number>> {
  const tids = await readdir(`/proc/${pid}/task`).catch(() => []);
  const entries = await Promise.all(tids.map(async (tid) => [tid, await cpuMicros(pid, `/proc/${pid}/task/${tid}/stat`).catch(() => 0)] as const));
  return new Map(entries);
}

async function startBundle(bundle: string, env: Record<string, string>, port: number): Promise<ChildProcess> {
  const nodeArgs = values['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${values['cpu-prof-dir']}`] : [];
  const child = spawn(process.execPath, [...nodeArgs, bundle], { env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const status = await fetch(`http://127.0.0.1:${port}/readyz`).then((response) => response.status, () => 0);
    if (status === 200) return child;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`${bundle} did not become ready on port ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function load(url: string, token: string, seconds: number): Promise<{ rps: number; requests: number; non200: number }> {
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url,
        method: 'POST',
        connections,
        duration: seconds,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: BODY,
        requests: [{ setupRequest: (request) => (Math.random() < IDEMPOTENT_SHARE ? { ...request, headers: { ...request.headers, 'idempotency-key': randomUUID() } } : request) }],
      },
      (error, result) => {
        if (error) return reject(error);
        const non200 = Object.entries(result.statusCodeStats ?? {}).reduce((sum, [status, { count }]) => sum + (status === '200' ? 0 : (count ?? 0)), 0);
        resolve({ rps: result.requests.total / seconds, requests: result.requests.total, non200: non200 + result.errors + result.timeouts });
      },
    );
  });
}

const data = await temporaryDirectory('compare-builds');
const servers: { name: string; child: ChildProcess; url: string }[] = [];
try {
  const auth = await startAuthServer({ dataDir: `${data.path}/auth`, env: { ACCESS_TOKEN_TTL: '86400' } });
  const token = (await requestToken(auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!)).body['access_token'] as string;
  const plans = `${data.path}/plans.json`;
  await writeFile(plans, JSON.stringify({ plans: { standard: { burst: 1e12, refillPerSecond: 1e12, dailyQuota: 1e14 } }, defaultPlan: 'standard' }));
  for (const [index, { name, bundle }] of builds.entries()) {
    const port = await freePort();
    const env = { PREDICTOR_PORT: String(port), METRICS_PORT: '0', ISSUER: auth.issuer, PREDICTOR_AUDIENCE: TEST_AUDIENCE, PLANS_FILE: plans, IDEMPOTENCY_STORE: 'sqlite', PREDICTOR_DATA_DIR: `${data.path}/b-${index}`, API_KEYS: 'false' };
    servers.push({ name, child: await startBundle(bundle, env, port), url: `http://127.0.0.1:${port}/v1/predict` });
  }
  for (const server of servers) await load(server.url, token, Number(values.warmup));
  const samples = new Map(servers.map((server) => [server.name, [] as { rps: number; cpu: number; main: number }[]]));
  for (let round = 0; round < rounds; round += 1) {
    const order = servers.map((_, index) => servers[(index + round) % servers.length]!);
    const line: string[] = [];
    for (const server of order) {
      const pid = server.child.pid!;
      const [before, threadsBefore] = [await cpuMicros(pid), await threadCpuMicros(pid)];
      const result = await load(server.url, token, durationSeconds);
      const cpu = ((await cpuMicros(pid)) - before) / Math.max(1, result.requests);
      const threadsAfter = await threadCpuMicros(pid);
      // The main thread apart from the others (the relay thread, libuv's pool, V8's helpers).
      const main = ((threadsAfter.get(String(pid)) ?? 0) - (threadsBefore.get(String(pid)) ?? 0)) / Math.max(1, result.requests);
      if (result.non200 > 0) throw new Error(`${server.name}: ${result.non200} answers other than 200`);
      samples.get(server.name)!.push({ rps: result.rps, cpu, main });
      line.push(`${server.name} ${Math.round(result.rps)} req/s ${cpu.toFixed(0)} µs (main ${main.toFixed(0)})`);
      if (values.threads) {
        const names = await Promise.all([...threadsAfter.keys()].map(async (tid) => `${tid}:${(await readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8').catch(() => '?')).trim()}`));
        const deltas = [...threadsAfter].map(([tid, after], index) => [names[index], (after - (threadsBefore.get(tid) ?? 0)) / Math.max(1, result.requests)] as const).filter(([, value]) => value > 0.2);
        process.stdout.write(`  ${server.name} threads: ${deltas.map(([name, value]) => `${name} ${value.toFixed(1)}`).join(', ')}\n`);
      }
    }
    process.stdout.write(`round ${round + 1}: ${line.join(' | ')}\n`);
  }
  const first = samples.get(servers[0]!.name)!;
  process.stdout.write(`\n| build | req/s median (min–max) | CPU µs/request median (main thread) | req/s vs ${servers[0]!.name}, round by round: median (min–max) |\n|---|---|---|---|\n`);
  for (const server of servers) {
    const own = samples.get(server.name)!;
    const rps = own.map((sample) => sample.rps);
    const ratios = own.map((sample, index) => sample.rps / first[index]!.rps);
    const fmt = (value: number) => value.toFixed(2);
    process.stdout.write(
      `| ${server.name} | ${Math.round(median(rps))} (${Math.round(Math.min(...rps))}–${Math.round(Math.max(...rps))}) | ${median(own.map((sample) => sample.cpu)).toFixed(0)} (${median(own.map((sample) => sample.main)).toFixed(0)}) | ${fmt(median(ratios))} (${fmt(Math.min(...ratios))}–${fmt(Math.max(...ratios))}) |\n`,
    );
  }
} finally {
  await Promise.all(servers.map((server) => stopChild(server.child)));
  await stopAll();
  await data.remove();
}
