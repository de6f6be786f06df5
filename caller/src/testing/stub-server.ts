import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';

export type StubHandler = (request: IncomingMessage, body: string, response: ServerResponse) => void | Promise<void>;

/** A local HTTP server for client tests; records every request. */
export async function startStubServer(handler: StubHandler) {
  const requests: { method: string; path: string; headers: IncomingMessage['headers']; body: string }[] = [];
  const server = createServer(async (request, response) => {
    let body = '';
    for await (const chunk of request) body += chunk;
    requests.push({ method: request.method ?? '', path: request.url ?? '', headers: request.headers, body });
    await handler(request, body, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://localhost:${(server.address() as AddressInfo).port}`;
  return {
    url,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  response.writeHead(status, { 'content-type': 'application/json', ...headers });
  response.end(JSON.stringify(body));
}

/**
 * A stub authorization server: discovery plus a token endpoint answering from
 * `answerToken` (default: tokens tok-1, tok-2, … valid for `expiresIn` seconds; `token_type`
 * DPoP when the request carries a `DPoP` proof). With `dpopNonce`, a token request whose proof
 * lacks that nonce is refused with 400 use_dpop_nonce and the nonce in `DPoP-Nonce`.
 */
export async function startStubIssuer(
  options: { expiresIn?: number; answerToken?: (count: number, response: ServerResponse) => void | Promise<void>; dpopAlgs?: string[]; dpopNonce?: string } = {},
) {
  let tokenCount = 0;
  const stub = await startStubServer(async (request, _body, response) => {
    if (request.url === '/.well-known/openid-configuration') {
      sendJson(response, 200, { issuer: stub.url, token_endpoint: `${stub.url}/token`, jwks_uri: `${stub.url}/jwks`, ...(options.dpopAlgs ? { dpop_signing_alg_values_supported: options.dpopAlgs } : {}) });
      return;
    }
    if (request.url === '/token') {
      const proof = request.headers['dpop'] as string | undefined;
      if (proof && options.dpopNonce && decodeJwt(proof)['nonce'] !== options.dpopNonce) {
        sendJson(response, 400, { error: 'use_dpop_nonce', error_description: 'nonce required' }, { 'dpop-nonce': options.dpopNonce });
        return;
      }
      tokenCount += 1;
      if (options.answerToken) return options.answerToken(tokenCount, response);
      sendJson(response, 200, { access_token: `tok-${tokenCount}`, token_type: proof ? 'DPoP' : 'bearer', expires_in: options.expiresIn ?? 100, scope: 'predict' });
      return;
    }
    sendJson(response, 404, {});
  });
  return { ...stub, tokenRequests: () => tokenCount };
}
