import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair } from 'jose';
import { AdminClient } from '@m2m/auth-server/admin-client';
import { freePort, rememberSecret, startTypeScript, stopAll, temporaryDirectory } from '../src/harness/processes.js';
import { DEV_ENV, startAuthServer, startPredictor, type RunningAuthServer, type RunningPredictor } from '../src/harness/system.js';

/**
 * The caller CLI with DPoP (RFC 9449) and RFC 9728 discovery against the real servers. The
 * predictor listens on a port chosen ahead so that its audience is its own URL (as `npm start`
 * has it, http://localhost:8080): a proof's `htu` is the URL the caller calls, and the metadata's
 * `resource` the URL it was fetched from. Both servers ask for DPoP nonces.
 */
describe('caller CLI with DPoP and discovery, against the real servers', () => {
  let dataDir: Awaited<ReturnType<typeof temporaryDirectory>>;
  let auth: RunningAuthServer;
  let predictor: RunningPredictor;
  let boundSecret: string;

  before(async () => {
    dataDir = await temporaryDirectory('caller-dpop');
    const port = await freePort();
    const audience = `http://localhost:${port}`;
    const nonces = { DPOP_NONCE_SECRET: randomBytes(24).toString('hex') };
    auth = await startAuthServer({ dataDir: `${dataDir.path}/auth`, audience, env: nonces });
    predictor = await startPredictor({ issuer: auth.issuer, dataDir: `${dataDir.path}/predictor`, audience, env: { PREDICTOR_PORT: String(port), ...nonces } });
    assert.equal(predictor.url, audience);
    // A client registered the ordinary way, then made to require DPoP, as an operator would.
    const admin = new AdminClient(auth.adminUrl, DEV_ENV['ADMIN_TOKEN']!);
    const registered = await admin.registerClient({ client_id: 'bound-caller', scopes: ['predict'], plan: 'standard' });
    assert.ok(registered.client_secret);
    boundSecret = registered.client_secret;
    rememberSecret(boundSecret);
    const setDpop = startTypeScript('admin', 'auth-server/src/admin-cli.ts', { ADMIN_URL: auth.adminUrl, ADMIN_TOKEN: DEV_ENV['ADMIN_TOKEN']! }, ['clients', 'set-dpop', 'bound-caller', 'required']);
    assert.equal((await setDpop.exited).code, 0, setDpop.output());
  });
  after(async () => {
    await stopAll();
    await dataDir.remove();
  });

  async function caller(env: Record<string, string>, args: string[]) {
    const cli = startTypeScript('caller', 'caller/bin/caller.js', env, args);
    const { code } = await cli.exited;
    return { code, stdout: cli.stdoutLines.join('\n'), stderr: cli.stderrLines.join('\n') };
  }
  const demoCaller = () => ({ ISSUER: auth.issuer, PREDICTOR_URL: predictor.url, CLIENT_ID: 'demo-caller', CLIENT_SECRET: DEV_ENV['DEMO_CALLER_SECRET']! });
  const boundCaller = () => ({ ISSUER: auth.issuer, PREDICTOR_URL: predictor.url, CLIENT_ID: 'bound-caller', CLIENT_SECRET: boundSecret });

  it('caller predict --dpop: a DPoP-bound token, the predictor’s nonce answered at once, a prediction', async () => {
    const { code, stdout, stderr } = await caller(demoCaller(), ['predict', '[[5.1,3.5,1.4,0.2]]', '--dpop', '--verbose']);
    assert.equal(code, 0, stderr);
    assert.equal((JSON.parse(stdout) as { predictions: { label: string }[] }).predictions[0]?.label, 'setosa');
    assert.match(stderr, /^attempt 1 \[key [0-9a-f-]{36}\]: 401 → retry at once with the predictor's DPoP nonce$/m);
    assert.match(stderr, /^attempt 2 \[key [0-9a-f-]{36}\]: 200 → done$/m);
    const token = await caller(demoCaller(), ['token', '--dpop']);
    assert.equal(token.code, 0, token.stderr);
    const { token_type, claims } = JSON.parse(token.stdout) as { token_type: string; claims: { cnf?: { jkt?: string } } };
    assert.equal(token_type, 'DPoP');
    assert.match(claims.cnf?.jkt ?? '', /^[\w-]{43}$/);
  });

  it('a client registered as DPoP-required works with --dpop (or a key file) and is refused without, saying why', async () => {
    const refused = await caller(boundCaller(), ['predict', '[[5.1,3.5,1.4,0.2]]']);
    assert.equal(refused.code, 3);
    assert.match(refused.stderr, /invalid_grant: DPoP proof JWT not provided; this client is registered to use DPoP: .*--dpop or CLIENT_DPOP=true/);
    assert.doesNotMatch(refused.stderr, new RegExp(boundSecret));

    const flag = await caller(boundCaller(), ['predict', '[[6.7,3.0,5.2,2.3]]', '--dpop']);
    assert.equal(flag.code, 0, flag.stderr);
    assert.equal((JSON.parse(flag.stdout) as { predictions: { label: string }[] }).predictions[0]?.label, 'virginica');

    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const keyFile = `${dataDir.path}/dpop-key.json`;
    await writeFile(keyFile, JSON.stringify({ ...(await exportJWK(privateKey)), alg: 'ES256' }), { mode: 0o600 });
    const fromFile = await caller({ ...boundCaller(), CLIENT_DPOP_KEY_FILE: keyFile }, ['predict', '[[6.0,2.7,4.1,1.0]]']);
    assert.equal(fromFile.code, 0, fromFile.stderr);
  });

  it('starts from PREDICTOR_URL alone: the authorization server from the predictor’s RFC 9728 metadata', async () => {
    const { ISSUER: _issuer, ...withoutIssuer } = demoCaller();
    const { code, stdout, stderr } = await caller({ ...withoutIssuer, CLIENT_DPOP: 'true' }, ['predict', '[[5.1,3.5,1.4,0.2]]']);
    assert.equal(code, 0, stderr);
    assert.match(stderr, new RegExp(`^caller: no ISSUER set: using ${auth.issuer}, from the predictor's metadata at ${predictor.url}/\\.well-known/oauth-protected-resource \\(resource ${predictor.url}\\)$`, 'm'));
    assert.equal((JSON.parse(stdout) as { predictions: { label: string }[] }).predictions[0]?.label, 'setosa');

    // An identifier that is not the predictor's: its metadata is not used (exit 2, both URLs named).
    const mismatch = await caller({ ...withoutIssuer, PREDICTOR_AUDIENCE: 'http://predictor.test' }, ['token']);
    assert.equal(mismatch.code, 2);
    assert.match(mismatch.stderr, new RegExp(`metadata at ${predictor.url}/\\.well-known/oauth-protected-resource is for the resource ${predictor.url}, not the configured audience http://predictor\\.test`));
  });
});
