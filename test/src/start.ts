import { spawn, type ChildProcess } from 'node:child_process';
import { ConfigError, DEFAULT_SHUTDOWN_GRACE_MS, EnvReader, REPEATED_SIGNAL_WINDOW_MS, SHUTDOWN_CLOSE_MARGIN_MS, SHUTDOWN_GRACE_RANGE } from '@m2m/common';
import { REPOSITORY_ROOT } from './harness/processes.js';

// `npm start`: both servers in the foreground on their configured ports (dev.env loaded
// by the npm script), logs on stdout. It never outlives a child:
// - a child exits, whatever the reason → the other one gets SIGTERM;
// - SIGINT/SIGTERM → SIGTERM to both; a second signal (past the repeat window) → SIGKILL;
// - a child still running past its own shutdown deadline (SHUTDOWN_GRACE_MS plus the close
//   margin) plus KILL_MARGIN_MS → SIGKILL.
// It exits once both are gone: 0 after a clean stop on a signal, 1 if a child failed,
// stopped on its own or had to be killed.

/** Past a child's own deadline, before it is killed (ms). */
const KILL_MARGIN_MS = 2_000;

let graceMs: number;
try {
  graceMs = new EnvReader(process.env).integer('SHUTDOWN_GRACE_MS', DEFAULT_SHUTDOWN_GRACE_MS, SHUTDOWN_GRACE_RANGE);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`start: ${error.message}\n`);
  process.exit(2);
}
const killAfterMs = graceMs + SHUTDOWN_CLOSE_MARGIN_MS + KILL_MARGIN_MS;

const services = ['auth-server', 'predictor'] as const;
const children = new Map<string, ChildProcess>();
let stopping = false;
let failed = false;
let signalledAt: number | undefined;
let killTimer: NodeJS.Timeout | undefined;

for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => onSignal(signal));
// The last resort (an exception in this script): no child is left behind.
process.once('exit', () => {
  for (const child of children.values()) child.kill('SIGKILL');
});

for (const service of services) {
  const child = spawn(process.execPath, ['--import', 'tsx', `${service}/src/main.ts`], { cwd: REPOSITORY_ROOT, env: process.env, stdio: 'inherit' });
  children.set(service, child);
  child.once('exit', (code, signal) => gone(service, `code ${code}, signal ${signal}`, code === 0));
  // 'error' also follows a failed kill(); only a child that never started is gone because of it.
  child.on('error', (error) => {
    if (child.pid === undefined) gone(service, error.message, false);
  });
}

function gone(service: string, how: string, clean: boolean): void {
  if (!children.delete(service)) return;
  if (!stopping) {
    process.stderr.write(`start: ${service} exited (${how}); stopping the rest\n`);
    failed = true;
    stop();
  } else if (!clean) {
    process.stderr.write(`start: ${service} exited (${how})\n`);
    failed = true;
  }
  if (children.size === 0) {
    clearTimeout(killTimer);
    process.exit(failed ? 1 : 0);
  }
}

function stop(): void {
  if (stopping) return;
  stopping = true;
  for (const child of children.values()) child.kill('SIGTERM');
  killTimer = setTimeout(() => kill(`still running ${killAfterMs} ms after SIGTERM`), killAfterMs);
}

function kill(reason: string): void {
  for (const [service, child] of children) {
    process.stderr.write(`start: ${service} ${reason}; SIGKILL\n`);
    child.kill('SIGKILL');
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
