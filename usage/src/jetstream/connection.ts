import { redactUrl, type Logger } from '@m2m/common';
import { connect, type NatsConnection, type NodeConnectionOptions, type Status } from '@nats-io/transport-node';
import { NatsUnavailable } from './errors.js';

export interface NatsConnectOptions {
  /**
   * `nats://[user:password@|token@]host[:port]` (`tls://` for TLS). The client ignores a URL's
   * user part, so credentials are taken out of it and passed as options; they never reach a log line.
   */
  url: string;
  /** Client name, shown by the server's monitoring (`connz`). */
  name: string;
  logger: Logger;
  /** Wait between reconnect attempts (ms), plus up to 100 ms of jitter. Default 1000. Attempts never stop. */
  reconnectWaitMs?: number;
  /**
   * Deadline of each connection handshake (ms), first or re-; also the default deadline of
   * JetStream API requests. Default 5000. A broker that accepts and then says nothing holds an
   * attempt this long before the next one.
   */
  connectTimeoutMs?: number;
  /**
   * Interval of the client's pings (ms). After 2 unanswered ones the connection counts as
   * stale and reconnects, so a broker gone silent (no FIN, no RST) is noticed within about
   * three intervals. Default 10_000.
   */
  pingIntervalMs?: number;
  /** How long `close()` lets the drain run before closing anyway (ms). Default 5000. */
  drainTimeoutMs?: number;
}

/** A NATS connection that reconnects forever, logs its state changes, and drains on close. */
export interface NatsHandle {
  readonly nc: NatsConnection;
  /** False from a disconnect until the reconnect, and once closed. */
  connected(): boolean;
  /**
   * Drains (subscriptions finish what they hold, buffered publishes and acks are flushed), then
   * closes. Idempotent: concurrent callers share one drain.
   */
  close(): Promise<void>;
}

/** Connects once (rejects with NatsUnavailable if that fails); from then on reconnects without end. */
export async function connectNats(options: NatsConnectOptions): Promise<NatsHandle> {
  const { logger } = options;
  const connectOptions: NodeConnectionOptions = {
    ...serverAndCredentials(options.url),
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: options.reconnectWaitMs ?? 1000,
    reconnectJitter: 100,
    timeout: options.connectTimeoutMs ?? 5000,
    pingInterval: options.pingIntervalMs ?? 10_000,
    maxPingOut: 2,
    // Otherwise every request (each publish's PubAck) builds two errors with stack traces up
    // front, in case it fails: 7% of the relay's CPU time in `npm run bench`. A failure
    // rejects with the same error classes; only their stack no longer shows the caller.
    noAsyncTraces: true,
  };
  let nc: NatsConnection;
  try {
    nc = await connect(connectOptions);
  } catch (error) {
    throw new NatsUnavailable(options.url, { cause: error });
  }
  logger.info({ nats: redactUrl(options.url), server: nc.getServer() }, 'NATS connected');

  let connected = true;
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect') connected = false;
      if (status.type === 'reconnect') connected = true;
      logStatus(logger, status);
    }
  })();

  let closing: Promise<void> | undefined;
  const drainTimeoutMs = options.drainTimeoutMs ?? 5000;
  return {
    nc,
    connected: () => connected && !nc.isClosed(),
    close: () =>
      (closing ??= (async () => {
        if (nc.isClosed()) return;
        let timer: NodeJS.Timeout | undefined;
        // A drain waits for the server to confirm; while disconnected it would wait for a reconnect that may never come.
        const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, drainTimeoutMs)));
        await Promise.race([nc.drain().catch(() => {}), deadline]);
        clearTimeout(timer);
        if (!nc.isClosed()) await nc.close();
      })()),
  };
}

function serverAndCredentials(url: string): Pick<NodeConnectionOptions, 'servers' | 'user' | 'pass' | 'token' | 'tls'> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`the NATS URL is not a URL: ${redactUrl(url)}`);
  }
  if (parsed.protocol !== 'nats:' && parsed.protocol !== 'tls:') throw new TypeError(`the NATS URL must start with nats:// or tls://: ${redactUrl(url)}`);
  const user = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  return {
    servers: parsed.host,
    ...(user && password ? { user, pass: password } : user ? { token: user } : {}),
    ...(parsed.protocol === 'tls:' ? { tls: {} } : {}),
  };
}

function logStatus(logger: Logger, status: Status): void {
  switch (status.type) {
    case 'disconnect':
      return void logger.warn({ server: status.server }, 'NATS disconnected; reconnecting');
    case 'reconnect':
      return void logger.info({ server: status.server }, 'NATS reconnected');
    case 'staleConnection':
      return void logger.warn('NATS connection stale (pings unanswered); reconnecting');
    case 'ldm':
      return void logger.warn({ server: status.server }, 'NATS server entering lame duck mode');
    case 'error':
      return void logger.error({ err: status.error.message }, 'NATS error');
    case 'slowConsumer':
      return void logger.warn({ subject: status.sub.getSubject(), pending: status.pending }, 'NATS slow consumer');
    case 'close':
      return void logger.info('NATS connection closed');
    default:
      return void logger.debug({ status: status.type }, 'NATS status');
  }
}
