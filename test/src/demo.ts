import { decodeJwt, decodeProtectedHeader } from 'jose';
import { AdminClient } from '@m2m/auth-server/admin-client';
import { EnvReader } from '@m2m/common';
import { DPoPKey, PredictorApiError, PredictorClient, TokenSource, parseChallenges, type AttemptEvent, type IrisRow } from 'caller';
import { freePort, stopAll, temporaryDirectory } from './harness/processes.js';
import { DEV_ENV, startAuthServer, startPredictor } from './harness/system.js';

// `npm run demo`: starts both servers on free ports with a throw-away data directory,
// drives the caller library through the main behaviours, prints what happened, and
// exits 0 only if every step behaved as expected. With DEMO_TARGET=external (the
// compose caller) it drives running servers instead: ISSUER, PREDICTOR_URL, ADMIN_URL
// (and USAGE_URL with METRICS_URL for the usage step).

const SAMPLES: [string, IrisRow][] = [
  ['a short-petalled flower', [5.1, 3.5, 1.4, 0.2]],
  ['a mid-sized flower', [6.0, 2.7, 4.1, 1.0]],
  ['a long-petalled flower', [6.7, 3.0, 5.2, 2.3]],
];

const checks: { step: string; ok: boolean; detail: string }[] = [];
const say = (line = '') => process.stdout.write(`${line}\n`);
const check = (step: string, ok: boolean, detail: string) => {
  checks.push({ step, ok, detail });
  say(`  ${ok ? '✓' : '✗'} ${detail}`);
};

interface Target {
  issuer: string;
  predictorUrl: string;
  admin: AdminClient;
  allowInsecureHttp: boolean;
  /** The usage report (GET /v1/usage): the ledger in the local predictor, or USAGE_URL; undefined skips that step. */
  usageUrl: string | undefined;
  /** The predictor's metrics listener (GET /metrics), which that step compares with the ledger: the local one, or METRICS_URL. */
  metricsUrl: string | undefined;
}

async function startLocal(): Promise<{ target: Target; stop: () => Promise<void> }> {
  const dataDir = await temporaryDirectory('demo');
  say('Starting the auth-server and the predictor on free ports…');
  const audience = 'http://localhost:8080';
  const auth = await startAuthServer({ dataDir: `${dataDir.path}/auth`, audience, env: { KEY_PROPAGATION_SECONDS: '0', ACCESS_TOKEN_TTL: '300' } });
  // Its port chosen ahead, so that its public URL is the one the caller calls: a DPoP proof names that URL (htu).
  const port = await freePort();
  const predictor = await startPredictor({
    issuer: auth.issuer,
    dataDir: `${dataDir.path}/predictor`,
    audience,
    env: { ADMIN_TOKEN: DEV_ENV['ADMIN_TOKEN']!, USAGE_ADMIN_PORT: '0', PREDICTOR_PORT: String(port), PREDICTOR_PUBLIC_URL: `http://localhost:${port}` },
  });
  const listening = await predictor.process.waitForLog((record) => record.msg === 'listening', 'listening');
  say(`  auth-server ${auth.issuer}   predictor ${predictor.url}   admin ${auth.adminUrl}`);
  return {
    target: {
      issuer: auth.issuer,
      predictorUrl: predictor.url,
      admin: new AdminClient(auth.adminUrl, DEV_ENV['ADMIN_TOKEN']!),
      allowInsecureHttp: false,
      usageUrl: `http://127.0.0.1:${listening['usageAdminPort'] as number}`,
      metricsUrl: predictor.metricsUrl,
    },
    stop: async () => {
      await stopAll();
      await dataDir.remove();
    },
  };
}

function external(): Target {
  const read = new EnvReader(process.env);
  return {
    issuer: read.url('ISSUER', 'http://localhost:9000'),
    predictorUrl: read.url('PREDICTOR_URL', 'http://localhost:8080'),
    admin: new AdminClient(read.url('ADMIN_URL', 'http://127.0.0.1:9001'), DEV_ENV['ADMIN_TOKEN'] ?? ''),
    allowInsecureHttp: read.oneOf('ALLOW_INSECURE_HTTP', 'false', ['true', 'false']) === 'true',
    usageUrl: read.string('USAGE_URL'),
    metricsUrl: read.string('METRICS_URL'),
  };
}

async function story(target: Target): Promise<void> {
  const events: AttemptEvent[] = [];
  const callerTokens = new TokenSource({ issuer: target.issuer, clientId: 'demo-caller', clientSecret: () => DEV_ENV['DEMO_CALLER_SECRET']!, allowInsecureHttp: target.allowInsecureHttp });
  const caller = new PredictorClient({ baseUrl: target.predictorUrl, tokens: callerTokens, onAttempt: (event) => events.push(event) });

  say('\n1. A token for demo-caller (OAuth2 client credentials)');
  const token = await callerTokens.getToken();
  const header = decodeProtectedHeader(token.value);
  const claims = decodeJwt(token.value);
  say(`  header  typ=${header.typ} alg=${header.alg} kid=${header.kid}`);
  say(`  claims  sub=${claims.sub} aud=${String(claims.aud)} scope="${String(claims['scope'])}" plan=${String(claims['plan'])} ttl=${claims.exp! - claims.iat!}s`);
  check('token', header.typ === 'at+jwt' && typeof header.kid === 'string', 'RFC 9068 access token, signed with a published key');

  say('\n2. Predictions with that token');
  for (const [description, row] of SAMPLES) {
    const { predictions } = await caller.predict([row]);
    const [prediction] = predictions;
    const confidence = prediction ? (prediction.probabilities[prediction.label]! * 100).toFixed(1) : '?';
    say(`  ${description.padEnd(24)} ${JSON.stringify(row).padEnd(20)} → ${prediction?.label} (${confidence}%)`);
  }
  check('cache', callerTokens.tokenRequests === 1, `${SAMPLES.length} predictions on ${callerTokens.tokenRequests} token request (cached)`);

  say('\n3. A burst of 12 predictions from demo-free (plan: burst 6, 2/s)');
  const freeEvents: AttemptEvent[] = [];
  const free = new PredictorClient({
    baseUrl: target.predictorUrl,
    tokens: new TokenSource({ issuer: target.issuer, clientId: 'demo-free', clientSecret: () => DEV_ENV['DEMO_FREE_SECRET']!, allowInsecureHttp: target.allowInsecureHttp }),
    maxAttempts: 8,
    onAttempt: (event) => freeEvents.push(event),
  });
  const started = performance.now();
  const burst = await Promise.allSettled(Array.from({ length: 12 }, (_, index) => free.predict([SAMPLES[index % 3]![1]])));
  const limited = freeEvents.filter((event) => event.status === 429);
  // The caller paces itself from each answer's RateLimit fields (burst, then the refill rate);
  // a 429 with Retry-After is only the backstop, for a client that sends blind.
  say(`  ${freeEvents.length} attempts, ${limited.length} answered 429: the caller sent the burst, then waited for the bucket to refill as the RateLimit fields said`);
  check('storm', burst.every((result) => result.status === 'fulfilled') && limited.length <= 1, `all 12 succeeded in ${((performance.now() - started) / 1000).toFixed(1)} s, paced by the caller instead of refused by the predictor`);

  say('\n4. A response lost on the way: the caller retries with the same Idempotency-Key');
  const key = `demo-${Date.now()}`;
  const first = await caller.predict([SAMPLES[1]![1]], { idempotencyKey: key });
  const retried = await caller.predict([SAMPLES[1]![1]], { idempotencyKey: key });
  say(`  first answer  id=${first.id}`);
  say(`  the retry     id=${retried.id} (replayed from the store, the model did not run again)`);
  check('idempotency', first.id === retried.id, 'the retried prediction was replayed, not executed twice');

  say('\n5. A signing-key rotation in the middle of traffic');
  let stop = false;
  let served = 0;
  let failed = 0;
  const traffic = (async () => {
    while (!stop) {
      await caller.predict([SAMPLES[0]![1]]).then(
        () => (served += 1),
        () => (failed += 1),
      );
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, 300));
  const before = (await target.admin.listKeys()).find((key) => key.state === 'current')!.kid;
  // The predictor fetched the JWKS after "next" was published (it starts after the auth-server), so it may sign at once.
  const after = (await target.admin.rotateKeys({ force: true })).find((key) => key.state === 'current')!.kid;
  await new Promise((resolve) => setTimeout(resolve, 700));
  stop = true;
  await traffic;
  const fresh = new TokenSource({ issuer: target.issuer, clientId: 'demo-caller', clientSecret: () => DEV_ENV['DEMO_CALLER_SECRET']!, allowInsecureHttp: target.allowInsecureHttp });
  const newKid = decodeProtectedHeader((await fresh.getToken()).value).kid;
  say(`  signing key ${before} → ${after}; ${served} predictions during the rotation, ${failed} failed`);
  say(`  the cached token (old key) kept working; a new token carries kid=${newKid}`);
  check('rotation', failed === 0 && newKid === after && served > 0, 'key rotated without a failed prediction');

  say('\n6. Least privilege: demo-readonly may list models but not predict');
  const readonly = new PredictorClient({
    baseUrl: target.predictorUrl,
    tokens: new TokenSource({ issuer: target.issuer, clientId: 'demo-readonly', clientSecret: () => DEV_ENV['DEMO_READONLY_SECRET']!, allowInsecureHttp: target.allowInsecureHttp }),
  });
  await readonly.listModels();
  const refusal = await readonly.predict([SAMPLES[0]![1]]).then(
    () => undefined,
    (error: unknown) => error,
  );
  check('scope', refusal instanceof PredictorApiError && refusal.status === 403 && refusal.attempts === 1, `predict refused at once: ${refusal instanceof Error ? refusal.message : 'it was allowed'}`);

  if (target.usageUrl && target.metricsUrl) await usage(target.metricsUrl, target.usageUrl);
  await senderConstrained(target);

  const attempts = events.length + freeEvents.length;
  say('\nSummary');
  say(`  ${'step'.padEnd(12)} result`);
  for (const entry of checks) say(`  ${entry.step.padEnd(12)} ${entry.ok ? 'ok    ' : 'FAILED'} ${entry.detail}`);
  say(`  (${attempts} attempts by demo-caller and demo-free, ${limited.length} of them answered 429)`);
}

/** DPoP (RFC 9449): a token bound to the caller's key works for the caller, and for nobody who copies it. */
async function senderConstrained(target: Target): Promise<void> {
  say('\n8. A sender-constrained token (DPoP): bound to demo-caller’s key, refused to whoever copies it');
  const key = await DPoPKey.generate();
  const tokens = new TokenSource({ issuer: target.issuer, clientId: 'demo-caller', clientSecret: () => DEV_ENV['DEMO_CALLER_SECRET']!, allowInsecureHttp: target.allowInsecureHttp, dpop: key });
  const token = await tokens.getToken();
  const jkt = (decodeJwt(token.value)['cnf'] as { jkt?: string } | undefined)?.jkt;
  const [prediction] = (await new PredictorClient({ baseUrl: target.predictorUrl, tokens }).predict([SAMPLES[2]![1]])).predictions;
  say(`  token_type=${token.tokenType} cnf.jkt=${jkt} (the caller's key) → ${prediction?.label}, with a new proof per request`);
  // Someone who copied the token (from a log, a proxy) replays it: as Bearer, then with a proof of their own key.
  const url = `${target.predictorUrl}/v1/predict`;
  const replay = async (headers: Record<string, string>) => {
    const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ inputs: [SAMPLES[0]![1]] }) });
    await response.body?.cancel();
    const error = parseChallenges(response.headers.get('www-authenticate')).find((challenge) => challenge.params['error'])?.params['error'];
    return { status: response.status, error };
  };
  const asBearer = await replay({ authorization: `Bearer ${token.value}` });
  const thief = await DPoPKey.generate();
  const otherKey = await replay({ authorization: `DPoP ${token.value}`, dpop: await thief.proof({ method: 'POST', url, accessToken: token.value }) });
  say(`  the same token as Bearer → ${asBearer.status} ${asBearer.error}; with a proof from another key → ${otherKey.status} ${otherKey.error}`);
  check(
    'dpop',
    token.tokenType === 'DPoP' && jkt === key.thumbprint && prediction !== undefined && asBearer.status === 401 && otherKey.status === 401,
    'the bound token worked with its key and was refused (401) as Bearer and with another key’s proof',
  );
}

/** Every executed prediction metered once: the ledger's totals against the predictor's own count of model runs. */
async function usage(metricsUrl: string, usageUrl: string): Promise<void> {
  say('\n7. Usage metering: each executed prediction counted once in the ledger');
  const executions = async () => Number(/^predictor_model_executions_total (\d+)/m.exec(await (await fetch(`${metricsUrl}/metrics`)).text())?.[1] ?? 0);
  const report = async () => {
    const response = await fetch(`${usageUrl}/v1/usage`, { headers: { authorization: `Bearer ${DEV_ENV['ADMIN_TOKEN'] ?? ''}` } });
    if (!response.ok) throw new Error(`GET /v1/usage answered ${response.status}`);
    return (await response.json()) as { totals: { clientId: string; day: string; predictions: number; rows: number }[]; sum: { predictions: number } };
  };
  // The relay delivers within a fraction of a second: wait for it, bounded.
  const deadline = performance.now() + 5_000;
  let counted = await report();
  let ran = await executions();
  while (counted.sum.predictions !== ran && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    [counted, ran] = [await report(), await executions()];
  }
  for (const total of counted.totals) say(`  ${total.day}  ${total.clientId.padEnd(12)} ${String(total.predictions).padStart(4)} predictions, ${total.rows} rows`);
  check('usage', counted.sum.predictions === ran && ran > 0, `${counted.sum.predictions} predictions in the ledger for ${ran} model executions (replays not counted)`);
}

const local = process.env['DEMO_TARGET'] !== 'external';
let stop = async () => {};
try {
  const target = local ? await startLocal().then((started) => ((stop = started.stop), started.target)) : external();
  await story(target);
} catch (error) {
  check('run', false, `the demo failed: ${error instanceof Error ? error.message : String(error)}`);
} finally {
  await stop();
}
const failedSteps = checks.filter((entry) => !entry.ok);
say(`\n${checks.length - failedSteps.length}/${checks.length} steps behaved as expected.${failedSteps.length ? ` Failed: ${failedSteps.map((entry) => entry.step).join(', ')}` : ''}`);
process.exitCode = failedSteps.length === 0 ? 0 : 1;
