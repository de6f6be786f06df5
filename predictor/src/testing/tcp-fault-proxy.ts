import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * What the proxy does to the traffic between a client and its engine (Redis, PostgreSQL):
 * - `up`: relays both ways.
 * - `refuse`: destroys every open connection now and every new one at once (a clean outage).
 * - `reset`: keeps connections until the client sends its next bytes (a command), then resets
 *   both sides with an RST instead of forwarding them: the command is pending when the
 *   connection dies. New connections are reset on their first bytes too.
 * - `blackhole`: accepts and swallows bytes both ways, answers nothing, closes nothing (a
 *   network that drops packets, or an engine that hangs).
 * - `hold`: forwards the client's bytes but keeps the engine's answers until the mode is `up`
 *   again, then delivers them in order (bytes the engine already sent, still on their way).
 */
export type FaultMode = 'up' | 'refuse' | 'reset' | 'blackhole' | 'hold';

interface Pair {
  client: Socket;
  upstream: Socket | undefined;
  /** The engine's bytes kept while in `hold`. */
  held: Buffer[];
}

/**
 * A TCP relay in front of a real engine whose faults a test switches at will. Written by
 * hand because the faults must hit one exact moment (a command in flight), which generic
 * proxies (toxiproxy and the like) would need a separate daemon for.
 */
export class TcpFaultProxy {
  #mode: FaultMode = 'up';
  readonly #pairs = new Set<Pair>();
  /** Connections accepted since start, whatever happened to them. */
  connections = 0;
  /** Client writes that were reset instead of forwarded. */
  resets = 0;

  private constructor(
    private readonly server: Server,
    private readonly target: { host: string; port: number },
  ) {
    server.on('connection', (client) => this.#accept(client));
  }

  /** Listens on a free loopback port in front of `target`. */
  static async start(target: { host: string; port: number }): Promise<TcpFaultProxy> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new TcpFaultProxy(server, target);
  }

  /** In front of the engine a URL names; `url` then names the proxy (same credentials and path). */
  static async forUrl(engineUrl: string, defaultPort: number): Promise<{ proxy: TcpFaultProxy; url: string }> {
    const target = new URL(engineUrl);
    const proxy = await TcpFaultProxy.start({ host: target.hostname, port: Number(target.port || defaultPort) });
    const proxied = new URL(engineUrl);
    proxied.hostname = '127.0.0.1';
    proxied.port = String(proxy.port);
    return { proxy, url: proxied.href };
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get mode(): FaultMode {
    return this.#mode;
  }

  /** Switches the fault; `refuse` also drops every open connection now, `up` delivers what `hold` kept. */
  set(mode: FaultMode): void {
    this.#mode = mode;
    if (mode === 'refuse') for (const pair of this.#pairs) this.#destroy(pair);
    if (mode === 'up') for (const pair of this.#pairs) for (const chunk of pair.held.splice(0)) pair.client.write(chunk);
  }

  async close(): Promise<void> {
    for (const pair of this.#pairs) this.#destroy(pair);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  #accept(client: Socket): void {
    this.connections += 1;
    client.on('error', () => {});
    if (this.#mode === 'refuse') return void client.destroy();
    const pair: Pair = { client, upstream: undefined, held: [] };
    this.#pairs.add(pair);
    client.on('close', () => this.#destroy(pair));
    // A connection accepted in blackhole never reaches the engine, as if the SYN-ACK came from nowhere useful.
    if (this.#mode !== 'blackhole') this.#connectUpstream(pair);
    client.on('data', (chunk: Buffer) => {
      switch (this.#mode) {
        case 'up':
        case 'hold':
          if (!pair.upstream) this.#connectUpstream(pair);
          pair.upstream!.write(chunk);
          return;
        case 'reset':
          this.resets += 1;
          this.#destroy(pair, true);
          return;
        case 'refuse':
          this.#destroy(pair);
          return;
        case 'blackhole':
          return;
      }
    });
  }

  #connectUpstream(pair: Pair): void {
    const upstream = connect(this.target.port, this.target.host);
    pair.upstream = upstream;
    upstream.on('error', () => this.#destroy(pair));
    upstream.on('close', () => this.#destroy(pair));
    upstream.on('data', (chunk: Buffer) => {
      if (this.#mode === 'up') pair.client.write(chunk);
      else if (this.#mode === 'hold') pair.held.push(chunk);
    });
  }

  #destroy(pair: Pair, reset = false): void {
    if (!this.#pairs.delete(pair)) return;
    for (const socket of [pair.client, pair.upstream]) {
      if (!socket || socket.destroyed) continue;
      if (reset) socket.resetAndDestroy();
      else socket.destroy();
    }
  }
}
