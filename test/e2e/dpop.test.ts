import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { Redis } from 'ioredis';
import { createDpopKey, dpopProof, type DpopKey } from '../../predictor/src/testing/dpop-proofs.js';
import { requireRedis, TEST_REDIS_URL } from '../../predictor/src/testing/engines.js';
import { rememberSecret, startTypeScript, stopAll, temporaryDirectory, type ManagedProcess } from '../src/harness/processes.js';
import { DEV_ENV, startAuthServer, startPredictor, TEST_AUDIENCE, type RunningAuthServer, type RunningPredictor } from '../src/harness/system.js';
import { skipUnlessEngines } from '../../common/src/testing/skip-unless-engines.js';

/**
 * DPoP end to end (RFC 9449): a DPoP-bound token from the real auth-server, with a proof
 * built here with jose, used at two real predictors sharing Redis. The predictors' public
 * URL is the audience (http://predictor.test), not the loopback address the test connects
 * to: the proofs name the public URL, as a client behind a proxy would.
 */

const ROW = [5.1, 3.5, 1.4, 0.2];
const PREDICT_HTU = `${TEST_AUDIENCE}/v1/predict`;

async function finished(cli: ManagedProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { code } = await cli.exited;
  return { code, stdout: cli.stdoutLines.join('\n'), stderr: cli.stderrLines.join('\n') };
}

describe('DPoP-bound tokens from the auth-server to two predictors on Redis', { skip: skipUnlessEngines(['redis']) }, () => {
  const redisPrefix = `test:dpop:${process.pid}:${randomBytes(4).toString('hex')}:`;
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let predictorA: RunningPredictor;
  let predictorB: RunningPredictor;
  let key: DpopKey;
  let boundSecret: string;

  before(async () => {
    await requireRedis();
    dataDir = await temporaryDirectory('dpop');
    auth = await startAuthServer({ dataDir: dataDir.path });
    const env = { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: redisPrefix, PREDICTOR_PUBLIC_URL: TEST_AUDIENCE, IDEMPOTENCY_STORE: 'memory', API_KEYS: 'false' };
    [predictorA, predictorB] = await Promise.all([
      startPredictor({ issuer: auth.issuer, dataDir: `${dataDir.path}/a`, env }),
      startPredictor({ issuer: auth.issuer, dataDir: `${dataDir.path}/b`, env }),
    ]);
    key = await createDpopKey();
    // Registered the way an operator does: the admin CLI's --dpop-bound.
    const added = await finished(
      startTypeScript('admin', 'auth-server/src/admin-cli.ts', { ADMIN_URL: auth.adminUrl, ADMIN_TOKEN: DEV_ENV['ADMIN_TOKEN']! }, ['clients', 'add', 'dpop-caller', '--scopes', 'predict,models:read', '--plan', 'standard', '--dpop-bound']),
    );
    assert.equal(added.code, 0, added.stderr);
    const result = JSON.parse(added.stdout) as { client: { dpop_bound_access_tokens: boolean }; client_secret: string };
    assert.equal(result.client.dpop_bound_access_tokens, true);
    boundSecret = result.client_secret;
    rememberSecret(boundSecret);
  });
  after(async () => {
    await stopAll();
    const redis = new Redis(TEST_REDIS_URL);
    const keys = await redis.keys(`${redisPrefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    await dataDir?.remove();
  });

  async function tokenRequest(clientId: string, secret: string, dpop?: string) {
    const response = await fetch(`${auth.issuer}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
        ...(dpop ? { dpop } : {}),
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'predict' }),
    });
    const body = (await response.json()) as Record<string, unknown>;
    if (typeof body['access_token'] === 'string') rememberSecret(body['access_token']);
    return { status: response.status, body };
  }

  async function boundToken(): Promise<string> {
    const { status, body } = await tokenRequest('dpop-caller', boundSecret, await dpopProof(key, { htm: 'POST', htu: `${auth.issuer}/token` }));
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body['token_type'], 'DPoP');
    return body['access_token'] as string;
  }

  const predict = (predictor: RunningPredictor, headers: Record<string, string>) =>
    fetch(`${predictor.url}/v1/predict`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ inputs: [ROW] }) });

  it('advertises DPoP in the auth-server metadata and in the predictor resource metadata (RFC 9728)', async () => {
    const asMetadata = (await (await fetch(`${auth.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    assert.ok(Array.isArray(asMetadata['dpop_signing_alg_values_supported']));
    const rsMetadata = (await (await fetch(`${predictorA.url}/.well-known/oauth-protected-resource`)).json()) as Record<string, unknown>;
    assert.equal(rsMetadata['resource'], TEST_AUDIENCE);
    assert.deepEqual(rsMetadata['authorization_servers'], [auth.issuer]);
    assert.deepEqual(rsMetadata['scopes_supported'], ['predict', 'models:read']);
    assert.deepEqual(rsMetadata['bearer_methods_supported'], ['header']);
    assert.deepEqual(rsMetadata['dpop_signing_alg_values_supported'], asMetadata['dpop_signing_alg_values_supported']);
  });

  it('refuses the DPoP-bound client a token without a proof, and binds its token to the proof key (cnf.jkt)', async () => {
    const refused = await tokenRequest('dpop-caller', boundSecret);
    assert.equal(refused.status, 400);
    assert.equal(refused.body['error'], 'invalid_grant');
    assert.match(String(refused.body['error_description']), /DPoP proof JWT not provided/);
    assert.deepEqual(decodeJwt(await boundToken())['cnf'], { jkt: key.thumbprint });
  });

  it('answers 200 to the bound token with a proof, at either predictor', async () => {
    const token = await boundToken();
    for (const predictor of [predictorA, predictorB]) {
      const response = await predict(predictor, { authorization: `DPoP ${token}`, dpop: await dpopProof(key, { htm: 'POST', htu: PREDICT_HTU, accessToken: token }) });
      assert.equal(response.status, 200, await response.clone().text());
    }
  });

  it('refuses at predictor B a proof predictor A accepted (the jti in Redis)', async () => {
    const token = await boundToken();
    const proof = await dpopProof(key, { htm: 'POST', htu: PREDICT_HTU, accessToken: token });
    assert.equal((await predict(predictorA, { authorization: `DPoP ${token}`, dpop: proof })).status, 200);
    const replayed = await predict(predictorB, { authorization: `DPoP ${token}`, dpop: proof });
    assert.equal(replayed.status, 401);
    assert.match(replayed.headers.get('www-authenticate') ?? '', /DPoP realm="predictor", error="invalid_dpop_proof", error_description="The DPoP proof was used already/);
  });

  it('refuses the bound token as Bearer, without a proof, with a proof for the loopback URL the test connects to, and with a stolen token under another key', async () => {
    const token = await boundToken();
    const asBearer = await predict(predictorA, { authorization: `Bearer ${token}` });
    assert.equal(asBearer.status, 401);
    assert.match(asBearer.headers.get('www-authenticate') ?? '', /^Bearer realm="predictor", error="invalid_token", error_description="This token is DPoP-bound/);

    const noProof = await predict(predictorA, { authorization: `DPoP ${token}` });
    assert.equal(noProof.status, 401);
    assert.match(noProof.headers.get('www-authenticate') ?? '', /error="invalid_dpop_proof"/);

    const forHostHeader = await predict(predictorA, { authorization: `DPoP ${token}`, dpop: await dpopProof(key, { htm: 'POST', htu: `${predictorA.url}/v1/predict`, accessToken: token }) });
    assert.equal(forHostHeader.status, 401);
    assert.match(forHostHeader.headers.get('www-authenticate') ?? '', /htu must be http:\/\/predictor\.test\/v1\/predict/);

    const thief = await createDpopKey();
    const stolen = await predict(predictorA, { authorization: `DPoP ${token}`, dpop: await dpopProof(thief, { htm: 'POST', htu: PREDICT_HTU, accessToken: token }) });
    assert.equal(stolen.status, 401);
    assert.match(stolen.headers.get('www-authenticate') ?? '', /error="invalid_token", error_description="Invalid DPoP key binding/);
  });

  it('keeps Bearer for the other clients, and names the resource metadata and both schemes on a 401', async () => {
    const bearer = await tokenRequest('demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!);
    assert.equal(bearer.status, 200);
    assert.equal(bearer.body['token_type'], 'Bearer');
    assert.equal((await predict(predictorA, { authorization: `Bearer ${bearer.body['access_token'] as string}` })).status, 200);

    const anonymous = await predict(predictorA, {});
    assert.equal(anonymous.status, 401);
    const metadataUrl = `${TEST_AUDIENCE}/.well-known/oauth-protected-resource`;
    assert.equal(
      anonymous.headers.get('www-authenticate'),
      `Bearer realm="predictor", resource_metadata="${metadataUrl}", DPoP realm="predictor", algs="ES256 EdDSA Ed25519 PS256", resource_metadata="${metadataUrl}"`,
    );
  });

  it('lets the operator make DPoP optional again (clients set-dpop … optional)', async () => {
    const run = await finished(startTypeScript('admin', 'auth-server/src/admin-cli.ts', { ADMIN_URL: auth.adminUrl, ADMIN_TOKEN: DEV_ENV['ADMIN_TOKEN']! }, ['clients', 'set-dpop', 'dpop-caller', 'optional']));
    assert.equal(run.code, 0, run.stderr);
    assert.equal((JSON.parse(run.stdout) as { dpop_bound_access_tokens: boolean }).dpop_bound_access_tokens, false);
    const bearer = await tokenRequest('dpop-caller', boundSecret);
    assert.equal(bearer.status, 200);
    assert.equal(bearer.body['token_type'], 'Bearer');
    const wrong = await finished(startTypeScript('admin', 'auth-server/src/admin-cli.ts', { ADMIN_URL: auth.adminUrl, ADMIN_TOKEN: DEV_ENV['ADMIN_TOKEN']! }, ['clients', 'set-dpop', 'dpop-caller', 'maybe']));
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /takes required or optional, not "maybe"/);
  });
});
