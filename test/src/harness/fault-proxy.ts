import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FaultProxyOptions {
  /** Where requests go. */
  target: string;
  /** Drop the response of every n-th request after the target answered it (0: never). */
  dropResponseEvery: number;
  /** Reset the connection of every n-th request before forwarding it (0: never). */
  resetEvery: number;
  onFault?: (kind: 'dropped-response' | 'reset', requestNumber: number) => void;
}

/**
 * An HTTP proxy that loses answers on purpose, on a fixed pattern (no randomness): the
 * target has executed a dropped request, the caller never hears of it.
 */
export async function startFaultProxy(options: FaultProxyOptions): Promise<{ url: string; counts: { forwarded: number; dropped: number; reset: number }; close: () => Promise<void> }> {
  const counts = { forwarded: 0, dropped: 0, reset: 0 };
  let requests = 0;
  const server: Server = createServer((incoming, outgoing) => {
    requests += 1;
    const number = requests;
    if (options.resetEvery > 0 && number % options.resetEvery === 0) {
      counts.reset += 1;
      options.onFault?.('reset', number);
      incoming.socket.destroy();
      return;
    }
    counts.forwarded += 1;
    const upstream = request(`${options.target}${incoming.url}`, { method: incoming.method, headers: incoming.headers }, (answer) => {
      if (options.dropResponseEvery > 0 && number % options.dropResponseEvery === 0) {
        answer.resume();
        answer.once('end', () => {
          counts.dropped += 1;
          options.onFault?.('dropped-response', number);
          incoming.socket.destroy();
        });
        return;
      }
      outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(outgoing);
    });
    upstream.on('error', () => incoming.socket.destroy());
    incoming.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
