import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPOSITORY_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export type LogRecord = Record<string, unknown> & { msg?: string };

/** Every child started by this module, so that none outlives the test run. */
const running = new Set<ManagedProcess>();
/** Every server process started, kept for the log audit in `stopAll`. */
const started: ManagedProcess[] = [];
/** Credentials the tests handled; none may appear in a server's output. */
const knownSecrets = new Set<string>();

/** Registers a credential (client secret, token, API key) that no server may ever log. */
export function rememberSecret(secret: string): void {
  if (secret.length >= 8) knownSecrets.add(secret);
}

/** Names of the processes whose output is a log (the CLI's stdout is results by design). */
const SERVER_NAMES = new Set(['auth-server', 'predictor', 'usage-ledger', 'npm start']);
process.once('exit', () => {
  for (const managed of running) managed.child.kill('SIGKILL');
});

/** A child process whose JSON log lines are captured and can be waited on. */
export class ManagedProcess {
  readonly stdoutLines: string[] = [];
  readonly stderrLines: string[] = [];
  readonly records: LogRecord[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #waiters: { predicate: (record: LogRecord) => boolean; resolve: (record: LogRecord) => void }[] = [];

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    running.add(this);
    if (SERVER_NAMES.has(name)) started.push(this);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        running.delete(this);
        resolve({ code, signal });
      });
    });
    createInterface({ input: child.stdout! }).on('line', (line) => this.#onStdout(line));
    createInterface({ input: child.stderr! }).on('line', (line) => this.stderrLines.push(line));
  }

  get pid(): number {
    return this.child.pid!;
  }

  /**
   * Resolves with the first log record (past or future) that matches; rejects if the
   * process exits first or nothing matches within `timeoutMs`, so a test fails, never hangs.
   */
  waitForLog(predicate: (record: LogRecord) => boolean, description: string, timeoutMs = 30_000): Promise<LogRecord> {
    const seen = this.records.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const fail = (reason: string) => {
        this.#waiters = this.#waiters.filter((entry) => entry !== waiter);
        clearTimeout(timer);
        reject(new Error(`${this.name} ${reason} before logging ${description}\n${this.output()}`));
      };
      const timer = setTimeout(() => fail(`waited ${timeoutMs} ms`), timeoutMs);
      const waiter = {
        predicate,
        resolve: (record: LogRecord) => {
          clearTimeout(timer);
          resolve(record);
        },
      };
      this.#waiters.push(waiter);
      void this.exited.then(({ code, signal }) => {
        if (this.#waiters.includes(waiter)) fail(`exited (code ${code}, signal ${signal})`);
      });
    });
  }

  /** Everything the process printed, for failure messages. */
  output(): string {
    return [...this.stdoutLines, ...this.stderrLines].join('\n');
  }

  /** SIGTERM (graceful), then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 5_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      const result = await this.exited;
      clearTimeout(timer);
      return result;
    }
    return this.exited;
  }

  /** Simulates a crash. */
  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }

  #onStdout(line: string): void {
    this.stdoutLines.push(line);
    if (!line.startsWith('{')) return;
    let record: LogRecord;
    try {
      record = JSON.parse(line) as LogRecord;
    } catch {
      return;
    }
    this.records.push(record);
    this.#waiters = this.#waiters.filter((waiter) => {
      if (!waiter.predicate(record)) return true;
      waiter.resolve(record);
      return false;
    });
  }
}

/** Runs a TypeScript entry point of the repository through tsx, from the repository root. */
export function startTypeScript(name: string, entry: string, env: Record<string, string>, args: string[] = []): ManagedProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
    cwd: REPOSITORY_ROOT,
    env: { PATH: process.env['PATH'] ?? '', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  return new ManagedProcess(name, child);
}

/**
 * Stops every process still running (for `after` hooks), then audits everything the
 * servers printed: a credential the tests handled in any line fails the test file.
 */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((managed) => managed.stop()));
  const leaks = started.flatMap((managed) => {
    const output = managed.output();
    return [...knownSecrets].filter((secret) => output.includes(secret)).map((secret) => `${managed.name} (pid ${managed.pid}) logged a secret starting ${secret.slice(0, 6)}…`);
  });
  started.length = 0;
  if (leaks.length > 0) throw new Error(`secrets in server logs:\n${leaks.join('\n')}`);
}

export async function temporaryDirectory(prefix: string): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `${prefix}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** True while a process with this pid exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * A port that was free a moment ago, for processes whose port must be known before they start.
 * Taken below the kernel's ephemeral range (Linux: ip_local_port_range, 32768–60999 by
 * default): a port from listen(0) comes from that range, which every outgoing connection also
 * draws from, and under load (two test runs side by side, a load generator's connections) one
 * took it before the server could listen (EADDRINUSE). Below the range only another caller of
 * this function competes, among about 20 000 ports.
 */
export async function freePort(): Promise<number> {
  const { low } = await ephemeralRange();
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const port = FREE_PORT_FLOOR + Math.floor(Math.random() * (low - FREE_PORT_FLOOR));
    if (await canListen(port)) return port;
  }
  return listenZeroPort();
}

/** Ports below this are left to well-known and registered services. */
const FREE_PORT_FLOOR = 10_000;

async function ephemeralRange(): Promise<{ low: number }> {
  const { readFile } = await import('node:fs/promises');
  const text = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').catch(() => '');
  const low = Number(text.trim().split(/\s+/)[0]);
  // Elsewhere (macOS, Windows) the ephemeral range starts at 49152.
  return { low: Number.isInteger(low) && low > FREE_PORT_FLOOR + 1000 ? low : 49_152 };
}

/** Whether a server could listen on `port` on every address now (as the servers do: 0.0.0.0). */
async function canListen(port: number): Promise<boolean> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '0.0.0.0', () => server.close(() => resolve(true)));
  });
}

async function listenZeroPort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A private redis-server on `port` (nothing on disk), so a test may stop and restart it without touching anyone's Redis. */
export function startRedisServer(port: number): ManagedProcess {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['pipe', 'pipe', 'pipe'] });
  return new ManagedProcess('redis-server', child);
}
