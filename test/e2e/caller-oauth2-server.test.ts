import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { generateKeyPair, SignJWT } from 'jose';
import { ManagedProcess, REPOSITORY_ROOT } from '../src/harness/processes.js';

/**
 * A minimal client-credentials authorization server, not oidc-provider: RFC 8414 metadata
 * at /.well-known/oauth-authorization-server (no OpenID metadata at all) and a token
 * endpoint at a path of its own choosing, with client_secret_basic for one client.
 */
async function startPlainOAuthServer(options: { serveMetadata: boolean }) {
  const { privateKey } = await generateKeyPair('ES256');
  const requests: string[] = [];
  const server: Server = createServer(async (request, response) => {
    requests.push(`${request.method} ${request.url}`);
    let body = '';
    for await (const chunk of request) body += chunk;
    const json = (status: number, value: unknown) => {
      response.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      response.end(JSON.stringify(value));
    };
    if (options.serveMetadata && request.method === 'GET' && request.url === '/.well-known/oauth-authorization-server') {
      return json(200, { issuer, token_endpoint: `${issuer}/oauth2/token`, grant_types_supported: ['client_credentials'], token_endpoint_auth_methods_supported: ['client_secret_basic'], response_types_supported: [] });
    }
    if (request.method === 'POST' && request.url === '/oauth2/token') {
      const [id, secret] = Buffer.from((request.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString().split(':').map(decodeURIComponent);
      if (id !== 'plain-client' || secret !== 'plain-secret') return json(401, { error: 'invalid_client', error_description: 'unknown client or wrong secret' });
      const form = new URLSearchParams(body);
      if (form.get('grant_type') !== 'client_credentials') return json(400, { error: 'unsupported_grant_type' });
      const accessToken = await new SignJWT({ client_id: id, scope: form.get('scope') ?? 'predict' })
        .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'plain-1' })
        .setIssuer(issuer)
        .setSubject(id)
        .setAudience('http://predictor.test')
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(privateKey);
      return json(200, { access_token: accessToken, token_type: 'Bearer', expires_in: 300, scope: form.get('scope') ?? 'predict' });
    }
    json(404, { error: 'not_found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://localhost:${(server.address() as AddressInfo).port}`;
  return {
    issuer,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function caller(env: Record<string, string>, args: string[]) {
  const child = spawn(process.execPath, ['caller/bin/caller.js', ...args], { cwd: REPOSITORY_ROOT, env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  const cli = new ManagedProcess('caller', child);
  const { code } = await cli.exited;
  return { code, stdout: cli.stdoutLines.join('\n'), stderr: cli.stderrLines.join('\n') };
}

describe('caller against a standard OAuth 2 server that serves only RFC 8414 metadata', () => {
  let plain: Awaited<ReturnType<typeof startPlainOAuthServer>>;
  let bare: Awaited<ReturnType<typeof startPlainOAuthServer>>;
  before(async () => {
    plain = await startPlainOAuthServer({ serveMetadata: true });
    bare = await startPlainOAuthServer({ serveMetadata: false });
  });
  after(async () => {
    await plain.close();
    await bare.close();
  });

  it('caller token discovers the token endpoint from /.well-known/oauth-authorization-server and gets a token', async () => {
    const { code, stdout, stderr } = await caller({ ISSUER: plain.issuer, CLIENT_ID: 'plain-client', CLIENT_SECRET: 'plain-secret' }, ['token']);
    assert.equal(code, 0, stderr);
    const { header, claims } = JSON.parse(stdout) as { header: { kid: string }; claims: { iss: string; client_id: string } };
    assert.equal(header.kid, 'plain-1');
    assert.equal(claims.iss, plain.issuer);
    assert.equal(claims.client_id, 'plain-client');
    assert.deepEqual(plain.requests, ['GET /.well-known/oauth-authorization-server', 'POST /oauth2/token']);
  });

  it('a wrong secret is an authentication failure (exit 3) with the server’s OAuth error', async () => {
    const { code, stderr } = await caller({ ISSUER: plain.issuer, CLIENT_ID: 'plain-client', CLIENT_SECRET: 'wrong' }, ['token']);
    assert.equal(code, 3);
    assert.match(stderr, /invalid_client/);
  });

  it('no metadata at either well-known URL is a configuration error (exit 2) naming both URLs, not an authentication failure', async () => {
    const { code, stderr } = await caller({ ISSUER: bare.issuer, CLIENT_ID: 'plain-client', CLIENT_SECRET: 'plain-secret' }, ['token']);
    assert.equal(code, 2, stderr);
    assert.match(stderr, new RegExp(`^caller: no authorization server metadata at ${bare.issuer}/\\.well-known/oauth-authorization-server or ${bare.issuer}/\\.well-known/openid-configuration \\(404\\): check ISSUER$`, 'm'));
    assert.ok(!bare.requests.some((request) => request.startsWith('POST')), 'no token request without metadata');
  });
});
