import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '@m2m/common';
import { startAuthServer, type RunningAuthServer } from '../app.js';
import { loadAuthServerConfig } from '../config.js';
import { openAuthState } from '../state/open.js';

const SECRET = 'dev-demo-caller-secret-for-throttle-test-01';

/** A token request with client_secret_basic, sent from `from` (a loopback address: 127.0.0.0/8 all reach the server). */
function tokenRequest(port: number, from: string, clientId: string, secret: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Record<string, unknown> }> {
  const body = new URLSearchParams({ grant_type: 'client_credentials' }).toString();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        localAddress: from,
        method: 'POST',
        path: '/token',
        agent: false,
        headers: {
          authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(body),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('token endpoint brute-force protection (in process, injected clock)', () => {
  let dir: string;
  let server: RunningAuthServer;
  let now = Date.UTC(2026, 10, 23, 12);
  const logs: Record<string, unknown>[] = [];
  const token = (from: string, clientId: string, secret: string) => tokenRequest(server.port, from, clientId, secret);
  // Prometheus text from the admin listener, which serves /metrics without the admin token.
  const metrics = async () => (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'auth-throttle-'));
    const config = loadAuthServerConfig({
      AUTH_PORT: '0',
      AUTH_HOST: '127.0.0.1',
      DATA_DIR: dir,
      DEMO_CALLER_SECRET: SECRET,
      CLIENT_AUTH_FAILURES_PER_CLIENT: '5',
      CLIENT_AUTH_MAX_DELAY_SECONDS: '30',
      CLIENT_AUTH_FAILURES_PER_ADDRESS: '10',
      ADMIN_TOKEN: 'throttle-test-admin-token-000000000000',
      ADMIN_PORT: '0',
    });
    const logger = createLogger('auth-server', 'info', { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
    server = await startAuthServer({ config, state: await openAuthState(config), logger, now: () => now });
  });
  after(async () => {
    await Promise.all(Object.values(server.listeners).map((listener) => new Promise<void>((resolve) => listener.close(() => resolve()))));
    await server.closeState();
    await rm(dir, { recursive: true, force: true });
  });

  it('delays a client after 5 failures in a row (429, Retry-After, slow_down, a log line, a metric), but not its usual address', async () => {
    assert.equal((await token('127.0.0.1', 'demo-caller', SECRET)).status, 200, 'the legitimate client, from its usual address');
    for (let i = 0; i < 6; i += 1) assert.equal((await token('127.0.0.2', 'demo-caller', `guess-${i}`)).status, 401, `failure ${i + 1}`);

    const refused = await token('127.0.0.2', 'demo-caller', 'guess-6');
    assert.equal(refused.status, 429);
    assert.equal(refused.headers['retry-after'], '1', 'first delay: 1 s');
    assert.equal(refused.body['error'], 'slow_down');
    assert.match(String(refused.body['error_description']), /too many failed client authentications for this client/);
    assert.ok(logs.some((line) => line['event'] === 'token.throttled' && line['limit'] === 'client' && line['clientId'] === 'demo-caller' && line['address'] === '127.0.0.2'));
    assert.match(await metrics(), /^auth_client_auth_throttled_total\{limit="client"\} 1$/m);
    assert.match(await metrics(), /^auth_client_auth_failures_total 6$/m);

    assert.equal((await token('127.0.0.1', 'demo-caller', SECRET)).status, 200, 'its usual address is not delayed');
    assert.equal((await token('127.0.0.3', 'demo-caller', SECRET)).status, 200, 'the success ended the delay, even for a new address');
  });

  it('bounds how long an attacker on many addresses holds back the legitimate client on a new one: delays double up to 30 s', async () => {
    const delays: number[] = [];
    for (let failures = 0, i = 0; failures < 12; i += 1) {
      // A fresh address per attempt: the per-address buckets never fill, only the client's delay applies.
      const answer = await token(`127.0.1.${i}`, 'demo-caller', `guess-${i}`);
      if (answer.status === 401) failures += 1;
      else {
        assert.equal(answer.status, 429);
        delays.push(Number(answer.headers['retry-after']));
        now += Number(answer.headers['retry-after']) * 1000;
      }
    }
    assert.deepEqual(delays, [1, 2, 4, 8, 16, 30], 'after 5 free failures: 1 s, doubling, capped at CLIENT_AUTH_MAX_DELAY_SECONDS');

    const fromNewAddress = await token('127.0.0.5', 'demo-caller', SECRET);
    assert.equal(fromNewAddress.status, 429);
    assert.equal(fromNewAddress.headers['retry-after'], '30', 'the longest wait');
    now += 30_000;
    assert.equal((await token('127.0.0.5', 'demo-caller', SECRET)).status, 200, 'served once the delay is over');
  });

  it('gives each source address a bucket of 10 failures a minute, whatever client ids it tries', async () => {
    for (let i = 0; i < 10; i += 1) assert.equal((await token('127.0.0.6', `nobody-${i}`, 'x')).status, 401);
    const refused = await token('127.0.0.6', 'nobody-10', 'x');
    assert.equal(refused.status, 429);
    assert.equal(refused.headers['retry-after'], '6');
    assert.match(String(refused.body['error_description']), /from this address/);
    assert.equal((await token('127.0.0.6', 'demo-caller', SECRET)).status, 429, 'every request from the address waits');
    assert.equal((await token('127.0.0.7', 'nobody-10', 'x')).status, 401, 'another address is not affected');
    now += 6_000;
    assert.equal((await token('127.0.0.6', 'demo-caller', SECRET)).status, 200, 'one failure earned back');
    assert.match(await metrics(), /^auth_client_auth_throttled_total\{limit="address"\} 2$/m);
  });

  it('never counts successes: 100 token requests in a row from one address all succeed', async () => {
    now += 600_000;
    for (let i = 0; i < 100; i += 1) assert.equal((await token('127.0.0.8', 'demo-caller', SECRET)).status, 200);
  });
});
