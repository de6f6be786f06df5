import type { Server } from 'node:http';
import type { Logger } from 'pino';

/** SHUTDOWN_GRACE_MS: how long in-flight requests may finish after SIGTERM (ms). Read by each server's config.ts. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
export const SHUTDOWN_GRACE_RANGE = { min: 0, max: 120_000 } as const;

/**
 * What closing the stores may take past the grace (ms). A process is gone at the latest
 * grace + this margin after the first signal (SIGTERM or SIGINT), whatever still hangs.
 */
export const SHUTDOWN_CLOSE_MARGIN_MS = 2_000;

/**
 * A signal repeated within this time is the same request delivered twice, not a second
 * one: a terminal's Ctrl-C reaches npm and its child, and npm forwards it (ms).
 */
export const REPEATED_SIGNAL_WINDOW_MS = 1_000;

/** How often, while draining, connections that finished their request are closed (ms). */
const IDLE_SWEEP_MS = 50;

export interface ShutdownOptions {
  /** The listeners, by name: they stop accepting at once and their requests get the grace period. */
  listeners: Readonly<Record<string, Server>>;
  /** What closes once the listeners are closed (stores, pools), by name, all at once. */
  closeSteps: Readonly<Record<string, () => unknown>>;
  logger: Logger;
  /** How long in-flight requests may finish (in milliseconds) before their connections are closed. */
  graceMs: number;
  /** How long the close steps may take past the grace (in milliseconds). Default SHUTDOWN_CLOSE_MARGIN_MS. */
  closeMarginMs?: number;
  /** Ends the process: `process.exit` outside tests. */
  exit: (code: number) => void;
  /** Runs first, synchronously: stop timers and background work. */
  onStart?: () => void;
  /** A monotonic clock (ms), for telling a repeated delivery from a second signal. */
  now?: () => number;
}

export interface Shutdown {
  /** Handles a signal: the first starts the shutdown, a later one (past REPEATED_SIGNAL_WINDOW_MS) exits 1 at once. */
  signal(name: string): void;
  /** The code passed to `exit`, once it was. */
  readonly exited: Promise<number>;
}

/**
 * The shutdown of a server process, bounded whatever hangs:
 *
 * 1. log `shutting down`; the listeners stop accepting; responses carry `Connection: close`
 *    and connections are closed as soon as they are idle;
 * 2. in-flight requests get `graceMs`; then every remaining connection is closed;
 * 3. the close steps run; all done → log `stopped`, exit 0; one failed → exit 1;
 * 4. whatever is still pending at `graceMs + closeMarginMs` (a pool.end() on a silent
 *    database, a Redis QUIT that gets no answer) → log `shutdown.forced`, exit 1.
 *
 * The deadline is a timer armed in step 1, so it fires however long a promise hangs.
 */
export function createShutdown(options: ShutdownOptions): Shutdown {
  const { listeners, closeSteps, logger, graceMs, exit } = options;
  const closeMarginMs = options.closeMarginMs ?? SHUTDOWN_CLOSE_MARGIN_MS;
  const now = options.now ?? (() => performance.now());
  let startedAt: number | undefined;
  let finished = false;
  let phase: 'draining' | 'closing' = 'draining';
  /** Names of the listeners and close steps not finished yet, for the forced-exit line. */
  const pending = new Set<string>();
  const timers: NodeJS.Timeout[] = [];
  let resolveExited!: (code: number) => void;
  const exited = new Promise<number>((resolve) => (resolveExited = resolve));

  const finish = (code: number) => {
    if (finished) return;
    finished = true;
    for (const timer of timers) clearTimeout(timer);
    resolveExited(code);
    exit(code);
  };

  let failed = false;
  const track = async (name: string, work: () => unknown): Promise<void> => {
    pending.add(name);
    try {
      await work();
    } catch (error) {
      failed = true;
      logger.error({ event: 'shutdown.failed', step: name, err: error }, 'shutdown step failed');
    } finally {
      pending.delete(name);
    }
  };

  const run = async (signal: string) => {
    logger.info({ event: 'shutdown.started', signal, graceMs, closeMarginMs }, 'shutting down');
    timers.push(
      setTimeout(() => {
        logger.error(
          { event: 'shutdown.forced', phase, pending: [...pending], activeResources: countResources(), afterMs: graceMs + closeMarginMs },
          'shutdown deadline passed; exiting with work still open',
        );
        finish(1);
      }, graceMs + closeMarginMs),
    );
    try {
      options.onStart?.();
      const drained = Promise.all(Object.entries(listeners).map(([name, server]) => track(`listener:${name}`, () => drain(server))));
      const graceOver = new Promise<'grace'>((resolve) => timers.push(setTimeout(() => resolve('grace'), graceMs)));
      if ((await Promise.race([drained, graceOver])) === 'grace') {
        const open = [...pending];
        if (open.length > 0) logger.warn({ event: 'shutdown.grace_expired', pending: open }, 'grace period over: closing the remaining connections');
        for (const server of Object.values(listeners)) server.closeAllConnections();
      }
      phase = 'closing';
      await Promise.all([drained, ...Object.entries(closeSteps).map(([name, close]) => track(name, close))]);
    } catch (error) {
      failed = true;
      logger.error({ event: 'shutdown.failed', err: error }, 'shutdown failed');
    }
    if (finished) return;
    if (failed) return finish(1);
    logger.info({ event: 'shutdown.stopped' }, 'stopped');
    finish(0);
  };

  const drain = (server: Server) =>
    new Promise<void>((resolve) => {
      // Keep-alive clients would otherwise send request after request on the open
      // connections and the listener would never close (node only refuses new connections).
      server.on('request', (_request, response) => {
        if (!response.headersSent) response.setHeader('connection', 'close');
      });
      const sweep = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
      timers.push(sweep);
      server.close(() => {
        clearInterval(sweep);
        resolve();
      });
      server.closeIdleConnections();
    });

  return {
    exited,
    signal(name: string) {
      if (finished) return;
      if (startedAt === undefined) {
        startedAt = now();
        void run(name);
        return;
      }
      if (now() - startedAt < REPEATED_SIGNAL_WINDOW_MS) return;
      logger.warn({ event: 'shutdown.interrupted', signal: name, phase, pending: [...pending] }, 'second signal: exiting now');
      finish(1);
    },
  };
}

/** Installs the shutdown on SIGINT and SIGTERM, exiting with `process.exit`. */
export function shutdownOnSignals(options: Omit<ShutdownOptions, 'exit'>): Shutdown {
  const shutdown = createShutdown({ ...options, exit: (code) => process.exit(code) });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => shutdown.signal(signal));
  return shutdown;
}

/** What keeps the event loop alive, by kind (TCPSocketWrap, Timeout…): cheap, and says what hung. */
function countResources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) counts[kind] = (counts[kind] ?? 0) + 1;
  return counts;
}
