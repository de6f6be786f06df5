import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { sendJson, startStubIssuer, startStubServer } from '../testing/stub-server.js';
import { runCli } from './run.js';

let directory = '';
const stubs: { close: () => Promise<void> }[] = [];
before(async () => {
  directory = await mkdtemp(join(tmpdir(), 'caller-cli-'));
});
after(async () => {
  await Promise.all(stubs.map((stub) => stub.close()));
  await rm(directory, { recursive: true, force: true });
});

/** Runs the CLI in-process; cwd is an empty folder, so no dev.env is found there. */
async function cli(argv: string[], env: Record<string, string> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { stdout: (text) => out.push(text), stderr: (text) => err.push(text), readStdin: async () => '', stderrIsTty: false, env, cwd: directory });
  return { code, stdout: out.join(''), stderr: err.join('') };
}

describe('caller CLI: usage', () => {
  it('shows a command’s own options with <command> --help', async () => {
    const predict = await cli(['predict', '--help']);
    assert.equal(predict.code, 0);
    assert.match(predict.stdout, /^usage: caller predict /);
    assert.match(predict.stdout, /--idempotency-key <key>/);
    assert.doesNotMatch(predict.stdout, /--concurrency/);
    const batch = await cli(['help', 'batch']);
    assert.match(batch.stdout, /--resume <batch id>/);
    assert.match((await cli(['--help'])).stdout, /Run caller <command> --help/);
  });

  it('refuses an unknown option in one line, with the closest option and where to look', async () => {
    const { code, stderr } = await cli(['batch', 'rows.jsonl', '--concurency', '20']);
    assert.equal(code, 2);
    assert.equal(stderr, 'caller: unknown option --concurency for "caller batch"; did you mean --concurrency? (caller batch --help)\n');
    const elsewhere = await cli(['predict', '[[1,1,1,1]]', '--concurrency', '3']);
    assert.equal(elsewhere.stderr, 'caller: --concurrency is an option of "caller batch", not of "caller predict" (caller predict --help)\n');
    const missing = await cli(['batch', 'rows.jsonl', '--concurrency']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^caller: Option '--concurrency <value>' argument missing \(caller batch --help\)\n$/);
    assert.match((await cli(['predcit'])).stderr, /^caller: unknown command "predcit"; did you mean "predict"\? \(caller --help\)\n$/);
  });

  it('treats a missing input file as a usage error (exit 2), before any configuration or network', async () => {
    const { code, stderr } = await cli(['batch', join(directory, 'absent.jsonl')]);
    assert.equal(code, 2);
    assert.match(stderr, /cannot read .*absent\.jsonl: no such file/);
    assert.equal((await cli(['predict', `@${join(directory, 'absent.json')}`])).code, 2);
    assert.equal((await cli(['predict'])).code, 2);
  });

  it('says where JSON input is broken and what shape was expected', async () => {
    const env = { CLIENT_ID: 'c', CLIENT_SECRET: 's', ISSUER: 'http://127.0.0.1:1' };
    const predict = await cli(['predict', '[[5.1, 3.5, 1.4 0.2]]'], env);
    assert.equal(predict.code, 5);
    assert.equal(predict.stderr, `caller: the input: not valid JSON at line 1, column 17 (Expected ',' or ']' after array element); expected {"inputs": [[f1,f2,f3,f4], ...]} or just the rows [[f1,f2,f3,f4], ...]\n`);
    const file = join(directory, 'rows.jsonl');
    await writeFile(file, '[[1,1,1,1]]\n{"inputs": [[1,1,1,1]]}\n{"input": [[1,1,1,1]]}\n');
    const batch = await cli(['batch', file], env);
    assert.equal(batch.code, 5);
    assert.match(batch.stderr, /rows\.jsonl line 3: expected \{"inputs": \[\[f1,f2,f3,f4\], \.\.\.\]\} or just the rows .*, got an object without "inputs" \(keys: input\)/);
  });

  it('says why the default client is not used when CLIENT_SECRET is set without CLIENT_ID', async () => {
    const { code, stderr } = await cli(['token'], { CLIENT_SECRET: 'x' });
    assert.equal(code, 2);
    assert.match(stderr, /^caller: CLIENT_ID is required: CLIENT_SECRET is set, so the default client \(demo-caller of dev\.env, used only when no client is configured\) is not used/);
  });
});

describe('caller CLI against stub servers', () => {
  it('uses demo-caller with DEMO_CALLER_SECRET from the environment where there is no dev.env (the container image)', async () => {
    const issuer = await startStubIssuer();
    stubs.push(issuer);
    const { code, stderr } = await cli(['token', '--raw'], { ISSUER: issuer.url, DEMO_CALLER_SECRET: 'from-compose' });
    assert.equal(code, 0, stderr);
    assert.match(stderr, /using demo-caller with DEMO_CALLER_SECRET from the environment/);
    const basic = issuer.requests.find((request) => request.path === '/token')?.headers.authorization ?? '';
    assert.deepEqual(Buffer.from(basic.slice(6), 'base64').toString().split(':').map(decodeURIComponent), ['demo-caller', 'from-compose']);
  });

  it('--verbose says when an answer was a replay', async () => {
    const issuer = await startStubIssuer();
    const predictor = await startStubServer((_request, _body, response) =>
      sendJson(response, 200, { id: 'p1', model: 'm', created: 0, predictions: [] }, { 'idempotent-replayed': 'true' }),
    );
    stubs.push(issuer, predictor);
    const { code, stderr } = await cli(['predict', '[[1,1,1,1]]', '--idempotency-key', 'order-17', '--verbose'], { ISSUER: issuer.url, PREDICTOR_URL: predictor.url, CLIENT_ID: 'c', CLIENT_SECRET: 's' });
    assert.equal(code, 0, stderr);
    assert.match(stderr, /^attempt 1 \[key order-17\]: 200 → done \(replayed: the result of an earlier execution with this key, not executed again\)$/m);
  });

  it('reports an issuer without any metadata as configuration (exit 2) naming the URLs', async () => {
    const issuer = await startStubServer((_request, _body, response) => sendJson(response, 404, {}));
    stubs.push(issuer);
    const { code, stderr } = await cli(['token'], { ISSUER: issuer.url, CLIENT_ID: 'c', CLIENT_SECRET: 's' });
    assert.equal(code, 2);
    assert.equal(stderr, `caller: no authorization server metadata at ${issuer.url}/.well-known/oauth-authorization-server or ${issuer.url}/.well-known/openid-configuration (404): check ISSUER\n`);
  });
});

describe('caller CLI: DPoP and discovery from the predictor URL (stub servers)', () => {
  /** A predictor stub: RFC 9728 metadata from `metadata`, and /v1/predict asking once for a DPoP nonce when a proof comes without it. */
  async function predictorStub(metadata: (url: string) => unknown) {
    const stub = await startStubServer((request, _body, response) => {
      if (request.url === '/.well-known/oauth-protected-resource') return sendJson(response, 200, metadata(stub.url));
      const proof = request.headers['dpop'] as string | undefined;
      if (proof && decodeJwt(proof)['nonce'] !== 'rs-nonce') {
        return sendJson(response, 401, {}, { 'www-authenticate': 'DPoP error="use_dpop_nonce"', 'dpop-nonce': 'rs-nonce' });
      }
      sendJson(response, 200, { id: 'p1', model: 'm', created: 0, predictions: [] });
    });
    stubs.push(stub);
    return stub;
  }

  it('predict --dpop binds the token to a key and sends every request as DPoP with a proof, the nonce round included', async () => {
    const issuer = await startStubIssuer();
    const predictor = await predictorStub(() => ({}));
    stubs.push(issuer);
    const { code, stderr } = await cli(['predict', '[[1,1,1,1]]', '--dpop', '--verbose'], { ISSUER: issuer.url, PREDICTOR_URL: predictor.url, CLIENT_ID: 'c', CLIENT_SECRET: 's' });
    assert.equal(code, 0, stderr);
    assert.match(stderr, /^attempt 1 \[key [0-9a-f-]{36}\]: 401 → retry at once with the predictor's DPoP nonce$/m);
    assert.match(stderr, /^attempt 2 \[key [0-9a-f-]{36}\]: 200 → done$/m);
    assert.ok(issuer.requests.find((request) => request.path === '/token')?.headers['dpop']);
    const predictions = predictor.requests.filter((request) => request.path === '/v1/predict');
    assert.deepEqual(predictions.map((request) => request.headers.authorization), ['DPoP tok-1', 'DPoP tok-1']);
    assert.ok(predictions.every((request) => typeof request.headers['dpop'] === 'string'));
  });

  it('with PREDICTOR_URL and no ISSUER, takes the authorization server from the predictor’s metadata and asks for its resource', async () => {
    const issuer = await startStubIssuer();
    stubs.push(issuer);
    const predictor = await predictorStub((url) => ({ resource: url, authorization_servers: [issuer.url] }));
    const { code, stderr } = await cli(['predict', '[[1,1,1,1]]'], { PREDICTOR_URL: predictor.url, CLIENT_ID: 'c', CLIENT_SECRET: 's' });
    assert.equal(code, 0, stderr);
    assert.equal(stderr, `caller: no ISSUER set: using ${issuer.url}, from the predictor's metadata at ${predictor.url}/.well-known/oauth-protected-resource (resource ${predictor.url})\n`);
    assert.equal(new URLSearchParams(issuer.requests.find((request) => request.path === '/token')?.body).get('resource'), predictor.url);
  });

  it('refuses metadata for another resource as configuration (exit 2), naming both URLs, before any token request', async () => {
    const issuer = await startStubIssuer();
    stubs.push(issuer);
    const predictor = await predictorStub(() => ({ resource: 'http://predictor.test', authorization_servers: [issuer.url] }));
    const { code, stderr } = await cli(['predict', '[[1,1,1,1]]'], { PREDICTOR_URL: predictor.url, CLIENT_ID: 'c', CLIENT_SECRET: 's' });
    assert.equal(code, 2);
    assert.match(stderr, new RegExp(`^caller: the protected resource metadata at ${predictor.url}/\\.well-known/oauth-protected-resource is for the resource http://predictor\\.test, not the predictor URL ${predictor.url} .*set PREDICTOR_AUDIENCE=http://predictor\\.test`));
    assert.equal(issuer.requests.length, 0);
    // The operator says the audience is that identifier: the check is then against what was configured.
    const configured = await cli(['predict', '[[1,1,1,1]]'], { PREDICTOR_URL: predictor.url, PREDICTOR_AUDIENCE: 'http://predictor.test', CLIENT_ID: 'c', CLIENT_SECRET: 's' });
    assert.equal(configured.code, 0, configured.stderr);
  });
});
