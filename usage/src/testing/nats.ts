import { createLogger, redactUrl, type Logger } from '@m2m/common';
import { JetStreamApiCodes, JetStreamApiError, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { after, before } from 'node:test';
import { enginesRequired, missingEngines, TEST_NATS_URL } from '../../../common/src/testing/engines.js';
import { connectNats, type NatsConnectOptions, type NatsHandle } from '../jetstream/connection.js';
import type { UsageStreamNames } from '../jetstream/stream.js';

/**
 * The real NATS (with JetStream) the usage tests use. Each test asks for it first; when it
 * cannot be reached the test fails at once with what is missing and how to start it. Where NATS
 * is missing on a developer's machine the test files skip these suites instead (`skipUnlessEngines`),
 * except under CI=true; the scenarios and the bench, run by hand, still fail here.
 */
export { TEST_NATS_URL };

const CONNECT_TIMEOUT_MS = 2_000;

/** The same error as predictor's testing/engines.ts (the workspaces do not depend on each other). */
export class EngineUnavailable extends Error {
  override name = 'EngineUnavailable';
}

export const silentLogger: Logger = createLogger('test', 'silent');

/** Resolves when NATS answers with JetStream on; otherwise rejects with EngineUnavailable naming the fix. */
export async function requireNats(url = TEST_NATS_URL): Promise<void> {
  let nats: NatsHandle | undefined;
  try {
    nats = await connectNats({ url, name: 'require-nats', logger: silentLogger, connectTimeoutMs: CONNECT_TIMEOUT_MS });
    await jetstreamManager(nats.nc); // asks for the account's JetStream info: fails when the server runs without -js
  } catch (error) {
    throw new EngineUnavailable(
      `NATS with JetStream is not reachable at ${redactUrl(url)} (${((error as Error).cause as Error | undefined)?.message ?? (error as Error).message}); these tests need a real nats-server: ` +
        'start it with `start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log` ' +
        '(.ci/run does), or set TEST_NATS_URL',
    );
  } finally {
    await nats?.close();
  }
}

/** A stream name and subject prefix no other test run uses, so runs never see each other's messages. */
export function uniqueUsageStreamNames(label = 'test'): Required<UsageStreamNames> {
  const unique = `${label}_${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  return { stream: `USAGE_${unique}`.toUpperCase(), subjectPrefix: `test.${unique}.usage.predictions` };
}

/**
 * For a `describe` on NATS: requires the engine before its tests, opens a connection of the
 * test's own, deletes every stream named by `names()` after them, and closes what `connect()` opened.
 */
export function withTestNats(): {
  nats: () => NatsHandle;
  jsm: () => JetStreamManager;
  names: (label?: string) => Required<UsageStreamNames>;
  connect: (options?: Partial<NatsConnectOptions>) => Promise<NatsHandle>;
} {
  let nats: NatsHandle | undefined;
  let jsm: JetStreamManager | undefined;
  const streams: string[] = [];
  const opened: NatsHandle[] = [];
  const connect = async (options: Partial<NatsConnectOptions> = {}) => {
    const handle = await connectNats({ url: TEST_NATS_URL, name: 'usage-test', logger: silentLogger, ...options });
    opened.push(handle);
    return handle;
  };
  before(async () => {
    if (!enginesRequired() && (await missingEngines(['nats'])).length > 0) return; // its suites are skipped
    await requireNats();
    nats = await connect();
    jsm = await jetstreamManager(nats.nc);
  });
  after(async () => {
    if (!jsm) return;
    for (const stream of streams) await jsm.streams.delete(stream).catch(() => {});
    for (const handle of opened) await handle.close();
  });
  return {
    nats: () => nats!,
    jsm: () => jsm!,
    names: (label) => {
      const names = uniqueUsageStreamNames(label);
      streams.push(names.stream);
      return names;
    },
    connect,
  };
}

/** Resolves once `condition()` is true (checked every 25 ms): for state only the client knows, like a reconnect. */
export async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** What a scenario reads of one usage stream on the real broker, and its removal afterwards. */
export interface UsageStreamProbe {
  /** Messages stored in the stream: a publish repeating an id inside the duplicate window adds none. */
  messages(): Promise<number>;
  /** A durable consumer's messages not yet delivered (`pending`) and delivered but not acked (`ackPending`). */
  consumerBacklog(durable: string): Promise<{ pending: number; ackPending: number }>;
  /** Deletes the stream with its consumers; one already gone is fine. */
  deleteStream(): Promise<void>;
  close(): Promise<void>;
}

/** A connection of its own (straight to the broker, past any fault proxy) that looks at `stream`. */
export async function openUsageStreamProbe(stream: string, url = TEST_NATS_URL): Promise<UsageStreamProbe> {
  const nats = await connectNats({ url, name: 'usage-stream-probe', logger: silentLogger, connectTimeoutMs: CONNECT_TIMEOUT_MS });
  const jsm = await jetstreamManager(nats.nc);
  return {
    messages: async () => (await jsm.streams.info(stream)).state.messages,
    consumerBacklog: async (durable) => {
      const info = await jsm.consumers.info(stream, durable);
      return { pending: info.num_pending, ackPending: info.num_ack_pending };
    },
    deleteStream: async () => {
      await jsm.streams.delete(stream).catch((error: unknown) => {
        if (!(error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound)) throw error;
      });
    },
    close: () => nats.close(),
  };
}
