import assert from 'node:assert/strict';
import { createServer, get, Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { createLogger } from './logger.js';
import { createShutdown, REPEATED_SIGNAL_WINDOW_MS, type ShutdownOptions } from './shutdown.js';

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

const servers: Server[] = [];
after(() => {
  for (const server of servers) server.closeAllConnections();
});

async function listening(handler: Handler = (_request, response) => response.end('ok')): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  server.keepAliveTimeout = 5_000;
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** A shutdown whose log lines and exit code the test reads; nothing really exits. */
function shutdownOf(options: Partial<ShutdownOptions> & Pick<ShutdownOptions, 'listeners'>) {
  const records: Record<string, unknown>[] = [];
  const exits: number[] = [];
  const logger = createLogger('test', 'info', { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) });
  const shutdown = createShutdown({ closeSteps: {}, logger, graceMs: 10_000, closeMarginMs: 10, exit: (code) => void exits.push(code), ...options });
  return { shutdown, records, exits, events: () => records.map((record) => record['event']) };
}

const never = () => new Promise<never>(() => {});

function fetchOn(url: string, agent?: Agent): Promise<{ status: number | undefined; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    get(url, { agent }, (response) => {
      response.resume();
      response.on('end', () => resolve({ status: response.statusCode, connection: response.headers.connection }));
    }).on('error', reject);
  });
}

describe('createShutdown', () => {
  it('closes the listener, then the stores, logs stopped and exits 0', async () => {
    const { server } = await listening();
    const closed: string[] = [];
    const { shutdown, exits, records, events } = shutdownOf({
      listeners: { http: server },
      closeSteps: { stores: async () => void closed.push(server.listening ? 'stores before the listener' : 'stores') },
      onStart: () => closed.push('timers'),
    });
    shutdown.signal('SIGTERM');
    assert.equal(await shutdown.exited, 0);
    assert.deepEqual(exits, [0]);
    assert.deepEqual(closed, ['timers', 'stores']);
    assert.deepEqual(events(), ['shutdown.started', 'shutdown.stopped']);
    assert.deepEqual(records.map((record) => record['msg']), ['shutting down', 'stopped']);
  });

  // Node's server.close() only refuses new connections: without the drain, this keep-alive
  // connection would hold the listener open for keepAliveTimeout (a minute here) or forever under load.
  it('lets a request in flight finish, then closes its keep-alive connection before the grace is over', { timeout: 5_000 }, async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let markInFlight!: () => void;
    const inFlight = new Promise<void>((resolve) => (markInFlight = resolve));
    const { server, url } = await listening((_request, response) => {
      markInFlight();
      void released.then(() => response.end('done'));
    });
    server.keepAliveTimeout = 60_000;
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const { shutdown, events } = shutdownOf({ listeners: { http: server }, graceMs: 60_000 });
    const first = fetchOn(url, agent);
    await inFlight;
    shutdown.signal('SIGTERM');
    // Queued on the same keep-alive socket: answered with Connection: close, or refused
    // when the idle connection was closed first; either way it cannot hold the listener.
    const second = fetchOn(url, agent).catch((error: Error) => error);
    release();
    assert.equal((await first).status, 200);
    assert.equal(await shutdown.exited, 0);
    const queued = await second;
    if (!(queued instanceof Error)) assert.equal(queued.connection, 'close');
    assert.ok(!events().includes('shutdown.grace_expired'), 'drained well before the grace period');
    agent.destroy();
  });

  it('closes the connections of requests still running when the grace is over, and exits 0', async () => {
    const { server, url } = await listening(() => {});
    let markInFlight!: () => void;
    const inFlight = new Promise<void>((resolve) => (markInFlight = resolve));
    server.on('request', () => markInFlight());
    const { shutdown, records } = shutdownOf({ listeners: { http: server }, graceMs: 5 });
    const hung = fetchOn(url).catch((error: Error) => error);
    await inFlight;
    shutdown.signal('SIGTERM');
    assert.equal(await shutdown.exited, 0);
    assert.ok((await hung) instanceof Error, 'the hung request lost its connection');
    const expired = records.find((record) => record['event'] === 'shutdown.grace_expired');
    assert.deepEqual(expired?.['pending'], ['listener:http']);
  });

  it('exits 1 with shutdown.forced naming the close step that hangs, once the grace and the margin are over', async () => {
    const { server } = await listening();
    const { shutdown, exits, records } = shutdownOf({ listeners: { http: server }, closeSteps: { stores: never, keys: async () => {} }, graceMs: 5, closeMarginMs: 5 });
    shutdown.signal('SIGTERM');
    assert.equal(await shutdown.exited, 1);
    assert.deepEqual(exits, [1]);
    const forced = records.find((record) => record['event'] === 'shutdown.forced');
    assert.ok(forced, JSON.stringify(records));
    assert.equal(forced['phase'], 'closing');
    assert.deepEqual(forced['pending'], ['stores']);
    assert.equal(forced['level'], 'error');
    assert.ok(!records.some((record) => record['msg'] === 'stopped'));
  });

  it('exits 1 when a close step fails, after the others closed', async () => {
    const { server } = await listening();
    let keysClosed = false;
    const { shutdown, records } = shutdownOf({
      listeners: { http: server },
      closeSteps: { stores: async () => Promise.reject(new Error('pool already ended')), keys: async () => void (keysClosed = true) },
    });
    shutdown.signal('SIGINT');
    assert.equal(await shutdown.exited, 1);
    assert.ok(keysClosed);
    assert.equal(records.find((record) => record['event'] === 'shutdown.failed')?.['step'], 'stores');
  });

  it('exits 1 at once on a second signal, but takes a repeat within the window for the same one', async () => {
    const { server } = await listening();
    let clock = 0;
    const { shutdown, exits, records } = shutdownOf({ listeners: { http: server }, closeSteps: { stores: never }, graceMs: 60_000, now: () => clock });
    shutdown.signal('SIGINT');
    clock = REPEATED_SIGNAL_WINDOW_MS - 1;
    shutdown.signal('SIGTERM');
    assert.deepEqual(exits, [], 'the same Ctrl-C forwarded by npm');
    clock = REPEATED_SIGNAL_WINDOW_MS;
    shutdown.signal('SIGINT');
    assert.deepEqual(exits, [1]);
    assert.equal(await shutdown.exited, 1);
    const interrupted = records.find((record) => record['event'] === 'shutdown.interrupted');
    assert.equal(interrupted?.['signal'], 'SIGINT');
    shutdown.signal('SIGTERM');
    assert.deepEqual(exits, [1], 'exits once');
  });
});
