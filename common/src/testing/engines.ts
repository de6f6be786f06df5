import { connect } from 'node:net';

/**
 * The real engines some tests need (PostgreSQL, Redis, NATS with JetStream): where the tests
 * look for them, how to start each, and a quick probe of whether anything answers there.
 * No driver is loaded here, so the probe costs one TCP connect per engine.
 *
 * On a machine without an engine its tests are skipped (see ./skip-unless-engines.ts and
 * test/src/engines-check.ts, which prints the one loud line of `npm test`); under CI=true a
 * missing engine is a failure instead, so CI still proves them.
 */
export type Engine = 'postgres' | 'redis' | 'nats';

export const TEST_DATABASE_URL = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
export const TEST_REDIS_URL = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
export const TEST_NATS_URL = process.env['TEST_NATS_URL'] ?? 'nats://127.0.0.1:4222';

export interface EngineInfo {
  /** As a person says it: "PostgreSQL". */
  label: string;
  url: string;
  defaultPort: number;
  /** The variable that points the tests elsewhere. */
  urlVariable: string;
  /** The command that starts it on this machine (the one .ci/run uses). */
  start: string;
}

export const ENGINES: Readonly<Record<Engine, EngineInfo>> = Object.freeze({
  postgres: {
    label: 'PostgreSQL',
    url: TEST_DATABASE_URL,
    defaultPort: 5432,
    urlVariable: 'TEST_DATABASE_URL',
    start: 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start',
  },
  redis: {
    label: 'Redis',
    url: TEST_REDIS_URL,
    defaultPort: 6379,
    urlVariable: 'TEST_REDIS_URL',
    start: 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
  },
  nats: {
    label: 'NATS',
    url: TEST_NATS_URL,
    defaultPort: 4222,
    urlVariable: 'TEST_NATS_URL',
    start: 'start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log',
  },
});

export const ALL_ENGINES: readonly Engine[] = Object.freeze(['postgres', 'redis', 'nats']);

/** A closed port on loopback answers at once; the timeout is for a host that drops the SYN. */
const PROBE_TIMEOUT_MS = 1_000;

/** Where a probe would connect: host and port of the engine's URL, or undefined when it is no TCP address (a Unix socket). */
export function engineAddress(engine: Engine): { host: string; port: number } | undefined {
  const { url, defaultPort } = ENGINES[engine];
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host || parsed.searchParams.has('host')) return undefined;
  return { host, port: Number(parsed.port || defaultPort) };
}

function answers(address: { host: string; port: number }): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(address);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), PROBE_TIMEOUT_MS);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Whether something accepts a TCP connection where each engine should be: true or false per
 * engine, probed at once and only once per process. An address that cannot be probed this way
 * counts as up, so its tests run and say themselves what is wrong. Up here does not prove the
 * engine healthy (a wrong database name, NATS without -js): those tests then fail with the
 * message of requirePostgres, requireRedis or requireNats, which is what should happen.
 */
export function engineAvailability(): Promise<Readonly<Record<Engine, boolean>>> {
  return (probed ??= Promise.all(
    ALL_ENGINES.map(async (engine) => {
      const address = engineAddress(engine);
      return [engine, address ? await answers(address) : true] as const;
    }),
  ).then((entries) => Object.freeze(Object.fromEntries(entries) as Record<Engine, boolean>)));
}
let probed: Promise<Readonly<Record<Engine, boolean>>> | undefined;

/** The engines of `engines` that do not answer, in the order of ALL_ENGINES. */
export async function missingEngines(engines: readonly Engine[] = ALL_ENGINES): Promise<Engine[]> {
  const availability = await engineAvailability();
  return ALL_ENGINES.filter((engine) => engines.includes(engine) && !availability[engine]);
}

/** "PostgreSQL (nothing answers at 127.0.0.1:5432; start it: …, or set TEST_DATABASE_URL)" for each engine. */
export function describeMissingEngines(engines: readonly Engine[]): string {
  return engines
    .map((engine) => {
      const { label, urlVariable, start } = ENGINES[engine];
      const address = engineAddress(engine);
      const where = address ? `${address.host}:${address.port}` : urlVariable;
      return `${label} (nothing answers at ${where}; start it: ${start}, or set ${urlVariable})`;
    })
    .join(', ');
}

/** CI=true: a missing engine fails the run instead of skipping its tests. */
export function enginesRequired(): boolean {
  return process.env['CI'] === 'true';
}
