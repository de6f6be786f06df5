import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { ConfigError, DEFAULT_SHUTDOWN_GRACE_MS, EnvReader, REPEATED_SIGNAL_WINDOW_MS, SHUTDOWN_CLOSE_MARGIN_MS, SHUTDOWN_GRACE_RANGE } from '@m2m/common';
import { REPOSITORY_ROOT } from './harness/processes.js';

// `npm start`: the servers in the foreground on their configured ports (dev.env loaded by
// the npm script), their JSON logs on stdout, this script's own lines on stderr.
// - The auth-server starts first; the predictor once the auth-server listens (its keys can
//   be fetched), so a normal start logs no `jwks.fetch_failed`. Then a summary on stderr:
//   the URLs, and the commands to try next.
// - `--only auth-server` or `--only predictor` runs one of them, e.g. in two terminals, so
//   that one can be stopped and started again while the other runs (an outage rehearsal).
// It never outlives a child:
// - a child exits, whatever the reason → the other one gets SIGTERM;
// - SIGINT/SIGTERM → SIGTERM to both; a second signal (past the repeat window) → SIGKILL;
// - a child still running past its own shutdown deadline (SHUTDOWN_GRACE_MS plus the close
//   margin) plus KILL_MARGIN_MS → SIGKILL.
// It exits once both are gone: 0 after a clean stop on a signal, 1 if a child failed,
// stopped on its own or had to be killed; 2 for a usage or configuration error.

/** Past a child's own deadline, before it is killed (ms). */
const KILL_MARGIN_MS = 2_000;
const SERVICES = ['auth-server', 'predictor'] as const;
type Service = (typeof SERVICES)[number];
type LogRecord = Record<string, unknown> & { msg?: string };

/**
 * oidc-provider's import-time `console.warn` on Node.js < 22 (red on a terminal). The fact
 * is true and worth knowing, so the summary says it once, calmly (`runtimeNote`); the
 * library's line would make every normal start look failed. Anything else on a child's
 * stderr is passed on as it is.
 */
const UNSUPPORTED_RUNTIME_WARNING = /^oidc-provider WARNING: Unsupported runtime\b/;

function usageError(message: string): never {
  process.stderr.write(`start: ${message}\nusage: npm start [-- --only auth-server|predictor]\n`);
  process.exit(2);
}

let only: Service | undefined;
let graceMs: number;
let env: EnvReader;
try {
  const { values } = parseArgs({ options: { only: { type: 'string' } } });
  if (values.only !== undefined && !(SERVICES as readonly string[]).includes(values.only)) usageError(`--only takes ${SERVICES.join(' or ')}, not "${values.only}"`);
  only = values.only as Service | undefined;
  env = new EnvReader(process.env);
  graceMs = env.integer('SHUTDOWN_GRACE_MS', DEFAULT_SHUTDOWN_GRACE_MS, SHUTDOWN_GRACE_RANGE);
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`start: ${error.message}\n`);
    process.exit(2);
  }
  usageError((error as Error).message);
}
const killAfterMs = graceMs + SHUTDOWN_CLOSE_MARGIN_MS + KILL_MARGIN_MS;

interface Child {
  process: ChildProcess;
  /** Waiting for a log record of this child; each resolves with undefined if the child is gone first. */
  waiters: Set<{ predicate: (record: LogRecord) => boolean; resolve: (record: LogRecord | undefined) => void }>;
}

const children = new Map<Service, Child>();
let stopping = false;
let failed = false;
let signalledAt: number | undefined;
let killTimer: NodeJS.Timeout | undefined;

for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => onSignal(signal));
// The last resort (an exception in this script): no child is left behind.
process.once('exit', () => {
  for (const child of children.values()) child.process.kill('SIGKILL');
});

const started = await startAll(only ? [only] : SERVICES);
if (started && !stopping) process.stderr.write(summary(started));

/** Starts the services in order; returns each one's `listening` record (the predictor's with its keys' outcome), or undefined if start-up was cut short. */
async function startAll(services: readonly Service[]): Promise<Map<Service, LogRecord> | undefined> {
  const listening = new Map<Service, LogRecord>();
  for (const service of services) {
    if (stopping) return undefined;
    const child = launch(service);
    const record = await nextRecord(child, (entry) => entry.msg === 'listening');
    if (!record) return undefined;
    listening.set(service, record);
  }
  const predictor = children.get('predictor');
  if (predictor) {
    // With the auth-server up, the first fetch succeeds; alone (`--only predictor`) it may not.
    const keys = await nextRecord(predictor, (entry) => entry['event'] === 'jwks.loaded' || entry['event'] === 'jwks.fetch_failed');
    if (!keys) return undefined;
    listening.set('predictor', { ...listening.get('predictor'), keysLoaded: keys['event'] === 'jwks.loaded' });
  }
  return listening;
}

function launch(service: Service): Child {
  const child: Child = {
    process: spawn(process.execPath, ['--import', 'tsx', `${service}/src/main.ts`], { cwd: REPOSITORY_ROOT, env: process.env, stdio: ['inherit', 'pipe', 'pipe'] }),
    waiters: new Set(),
  };
  children.set(service, child);
  createInterface({ input: child.process.stdout! }).on('line', (line) => {
    process.stdout.write(`${line}\n`);
    const record = parseRecord(line);
    if (!record) return;
    for (const waiter of child.waiters) {
      if (!waiter.predicate(record)) continue;
      child.waiters.delete(waiter);
      waiter.resolve(record);
    }
  });
  createInterface({ input: child.process.stderr! }).on('line', (line) => {
    if (!UNSUPPORTED_RUNTIME_WARNING.test(line)) process.stderr.write(`${line}\n`);
  });
  // 'close', not 'exit': the child's last log lines (its "stopped") are through the pipes by then.
  child.process.once('close', (code, signal) => gone(service, `code ${code}, signal ${signal}`, code === 0));
  // 'error' also follows a failed kill(); only a child that never started is gone because of it.
  child.process.on('error', (error) => {
    if (child.process.pid === undefined) gone(service, error.message, false);
  });
  return child;
}

function parseRecord(line: string): LogRecord | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    return JSON.parse(line) as LogRecord;
  } catch {
    return undefined;
  }
}

function nextRecord(child: Child, predicate: (record: LogRecord) => boolean): Promise<LogRecord | undefined> {
  return new Promise((resolve) => child.waiters.add({ predicate, resolve }));
}

function gone(service: Service, how: string, clean: boolean): void {
  const child = children.get(service);
  if (!child) return;
  children.delete(service);
  for (const waiter of child.waiters) waiter.resolve(undefined);
  child.waiters.clear();
  if (!stopping) {
    process.stderr.write(`start: ${service} exited (${how}); stopping the rest\n`);
    failed = true;
    stop();
  } else if (!clean) {
    process.stderr.write(`start: ${service} exited (${how})\n`);
    failed = true;
  }
  if (children.size === 0) exit();
}

function exit(): never {
  clearTimeout(killTimer);
  process.exit(failed ? 1 : 0);
}

function stop(): void {
  if (stopping) return;
  stopping = true;
  if (children.size === 0) exit();
  for (const child of children.values()) child.process.kill('SIGTERM');
  killTimer = setTimeout(() => kill(`still running ${killAfterMs} ms after SIGTERM`), killAfterMs);
}

function kill(reason: string): void {
  for (const [service, child] of children) {
    process.stderr.write(`start: ${service} ${reason}; SIGKILL\n`);
    child.process.kill('SIGKILL');
    failed = true;
  }
}

function onSignal(signal: NodeJS.Signals): void {
  if (signalledAt === undefined) {
    signalledAt = performance.now();
    stop();
  } else if (performance.now() - signalledAt >= REPEATED_SIGNAL_WINDOW_MS) {
    // Within the window it is the same Ctrl-C twice (the terminal's and npm's forwarded one).
    kill(`second ${signal}`);
  }
}

/** A URL for a listener bound to `host`: a wildcard address is reached as localhost. */
function urlOf(host: string | undefined, port: unknown, path = ''): string {
  const name = host === undefined || host === '' || host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  return `http://${name}:${String(port)}${path}`;
}

/** `NAME=value ` for each variable whose value differs from the CLI's default. */
function envPrefix(variables: [name: string, value: string, fallback: string][]): string {
  return variables
    .filter(([, value, fallback]) => value !== fallback)
    .map(([name, value]) => `${name}=${value} `)
    .join('');
}

/** What runs where, and what to try next; `listening` holds each service's `listening` record. */
function summary(listening: Map<Service, LogRecord>): string {
  const rows: [string, string, string][] = [];
  const tries: string[] = [];
  const auth = listening.get('auth-server');
  const predictor = listening.get('predictor');
  if (auth) {
    const issuer = String(auth['issuer']);
    const admin = urlOf(auth['adminHost'] as string | undefined, auth['adminPort']);
    rows.push(['auth-server', issuer, 'issuer: token endpoint, JWKS, metadata']);
    rows.push(['', admin, `admin API, port ${String(auth['adminPort'])} (ADMIN_TOKEN from dev.env)`]);
    tries.push(`${envPrefix([['ADMIN_URL', admin, 'http://127.0.0.1:9001']])}npm run -s admin -- clients list`);
  }
  if (predictor) {
    const api = urlOf(env.string('PREDICTOR_HOST'), predictor['port']);
    rows.push(['predictor', `${api}/v1/predict`, predictor['keysLoaded'] ? 'API (signing keys loaded)' : `API (signing keys not loaded yet: is the auth-server at ${String(predictor['issuer'])} up?)`]);
    rows.push(['', urlOf(env.string('METRICS_HOST', '127.0.0.1'), predictor['metricsPort'], '/metrics'), 'metrics (Prometheus)']);
    if (predictor['usageAdminPort'] !== undefined) rows.push(['', urlOf(env.string('USAGE_ADMIN_HOST', '127.0.0.1'), predictor['usageAdminPort'], '/v1/usage'), 'usage report (ADMIN_TOKEN from dev.env)']);
    const issuer = String(predictor['issuer']);
    tries.unshift(`${envPrefix([['ISSUER', issuer, 'http://localhost:9000'], ['PREDICTOR_URL', api, 'http://localhost:8080']])}npx caller predict '[[5.1,3.5,1.4,0.2]]'`);
  } else if (auth) {
    tries.unshift(`${envPrefix([['ISSUER', String(auth['issuer']), 'http://localhost:9000']])}npx caller token`);
  }
  const width = Math.max(...rows.map(([, url]) => url.length));
  const lines = [
    `start: ${[...listening.keys()].join(' and ')} ready`,
    ...rows.map(([service, url, what]) => `  ${service.padEnd(12)} ${url.padEnd(width)}  ${what}`),
    '  try next:',
    ...tries.map((command) => `    ${command}`),
    only
      ? `  Ctrl-C stops the ${only}; start it again with the same command. The other one: npm start -- --only ${only === 'predictor' ? 'auth-server' : 'predictor'}`
      : '  Ctrl-C stops both. To stop and restart one of them (an outage rehearsal), run each alone: npm start -- --only auth-server, npm start -- --only predictor',
  ];
  const note = runtimeNote();
  if (note) lines.push(`  note: ${note}`);
  return `${lines.join('\n')}\n`;
}

/** On Node.js before 22, what oidc-provider's suppressed warning says, as a fact rather than an alarm. */
function runtimeNote(): string | undefined {
  if (!runs('auth-server') || Number(process.versions.node.split('.')[0]) >= 22) return undefined;
  return `Node.js ${process.version} is past its end of life; oidc-provider supports Node.js 22 LTS or later (it works on 20, and the images run 22).`;
}

function runs(service: Service): boolean {
  return only === undefined || only === service;
}
