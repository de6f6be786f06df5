import { decodeJwt, decodeProtectedHeader } from 'jose';
import { PredictorApiError, PredictorClient, TokenSource, type IrisRow } from 'caller';
import { stopAll, temporaryDirectory } from './harness/processes.js';
import { DEV_ENV, startAuthServer, startPredictor } from './harness/system.js';

// `npm run demo`: starts both servers on free ports with a throw-away data directory,
// drives the caller library through the main behaviours, prints what happened, and
// exits 0 only if every step behaved as expected.

const AUDIENCE = 'http://localhost:8080';
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

const dataDir = await temporaryDirectory('demo');
try {
  say('Starting the auth-server and the predictor on free ports…');
  const auth = await startAuthServer({ dataDir: dataDir.path, audience: AUDIENCE });
  const predictor = await startPredictor({ issuer: auth.issuer, dataDir: dataDir.path, audience: AUDIENCE });
  say(`  auth-server ${auth.issuer}   predictor ${predictor.url}`);

  const tokens = new TokenSource({ issuer: auth.issuer, clientId: 'demo-caller', clientSecret: () => DEV_ENV['DEMO_CALLER_SECRET']!, scope: 'predict models:read' });
  const client = new PredictorClient({ baseUrl: predictor.url, tokens });

  say('\n1. A token for demo-caller (OAuth2 client credentials)');
  const token = await tokens.getToken();
  const header = decodeProtectedHeader(token.value);
  const claims = decodeJwt(token.value);
  say(`  header  typ=${header.typ} alg=${header.alg} kid=${header.kid}`);
  say(`  claims  sub=${claims.sub} aud=${String(claims.aud)} scope="${String(claims['scope'])}" plan=${String(claims['plan'])} ttl=${claims.exp! - claims.iat!}s`);
  check('token', header.typ === 'at+jwt' && claims.aud === AUDIENCE, 'RFC 9068 access token for the predictor');

  say('\n2. Predictions with that token');
  for (const [description, row] of SAMPLES) {
    const { predictions } = await client.predict([row]);
    const [prediction] = predictions;
    const confidence = prediction ? (prediction.probabilities[prediction.label]! * 100).toFixed(1) : '?';
    say(`  ${description.padEnd(24)} ${JSON.stringify(row).padEnd(20)} → ${prediction?.label} (${confidence}%)`);
  }
  check('cache', tokens.tokenRequests === 1, `${SAMPLES.length} predictions on ${tokens.tokenRequests} token request (cached)`);

  say('\n3. Least privilege: demo-readonly may list models but not predict');
  const readonly = new PredictorClient({
    baseUrl: predictor.url,
    tokens: new TokenSource({ issuer: auth.issuer, clientId: 'demo-readonly', clientSecret: () => DEV_ENV['DEMO_READONLY_SECRET']!, scope: 'models:read' }),
  });
  await readonly.listModels();
  const refusal = await readonly.predict([SAMPLES[0]![1]]).then(
    () => undefined,
    (error: unknown) => error,
  );
  check('scope', refusal instanceof PredictorApiError && refusal.status === 403, `predict refused: ${refusal instanceof Error ? refusal.message : 'it was allowed'}`);
} catch (error) {
  check('run', false, `the demo failed: ${error instanceof Error ? error.message : String(error)}`);
} finally {
  await stopAll();
  await dataDir.remove();
}

const failed = checks.filter((entry) => !entry.ok);
say(`\nSummary: ${checks.length - failed.length}/${checks.length} steps behaved as expected.${failed.length ? ` Failed: ${failed.map((entry) => entry.step).join(', ')}` : ''}`);
process.exitCode = failed.length === 0 ? 0 : 1;
