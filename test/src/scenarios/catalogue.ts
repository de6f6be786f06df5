import { writeFile } from 'node:fs/promises';
import { decodeProtectedHeader } from 'jose';
import { RetryBudget, loadCallerConfig } from 'caller';
import { startFaultProxy } from '../harness/fault-proxy.js';
import { DEV_ENV, requestToken, startAuthServer } from '../harness/system.js';
import type { Engine } from '../../../common/src/testing/engines.js';
import type { ScenarioRun } from './framework.js';
import { signupSpike } from './signup-spike.js';
import { storeOutage } from './store-outage.js';
import { usageExactlyOnce } from './usage-exactly-once.js';

export interface Scenario {
  name: string;
  summary: string;
  authEnv?: Record<string, string>;
  predictorEnv?: Record<string, string>;
  /** A plans file for the predictor (default: the committed plans). */
  plans?: unknown;
  /** The real engines it runs on: its test is skipped where they are missing (not under CI=true); run by hand it fails saying which. */
  engines?: readonly Engine[];
  run(run: ScenarioRun): Promise<void>;
}

const count = <T>(items: T[], predicate: (item: T) => boolean) => items.filter(predicate).length;
const at = (record: Record<string, unknown>) => Date.parse(record['time'] as string);

export const SCENARIOS: Scenario[] = [
  {
    name: 'token-expiry',
    summary: 'Tokens live 2 s: the caller renews them ahead of expiry; no prediction fails, the predictor serves no 401.',
    authEnv: { ACCESS_TOKEN_TTL: '2' },
    async run(run) {
      const { tokens, client } = run.caller();
      run.trace.note('Operator', 'access tokens live 2 s');
      const outcomes = await run.traffic(client, { durationMs: 6_000, concurrency: 2, pauseMs: 50 });
      await run.expectExactlyOnce(outcomes);
      run.expect('401 served by the predictor', run.statusesServed().get(401) ?? 0, '0', !run.statusesServed().has(401));
      run.expect('token requests (6 s of 2 s tokens)', tokens.tokenRequests, '≥ 3', tokens.tokenRequests >= 3);
    },
  },
  {
    name: 'signing-key-rotation',
    summary: 'Rotate the signing key mid-traffic: old tokens keep working until they expire, new ones carry the new kid, the JWKS is fetched a bounded number of times.',
    authEnv: { ACCESS_TOKEN_TTL: '3', KEY_PROPAGATION_SECONDS: '1' },
    // Room for the traffic and the check with the old token: rate limits are not the subject here (a 429 would hide the answer).
    plans: { plans: { standard: { burst: 1_000, refillPerSecond: 1_000, dailyQuota: 10_000_000 }, free: { burst: 1, refillPerSecond: 1, dailyQuota: 100 } }, defaultPlan: 'free' },
    async run(run) {
      const { client } = run.caller();
      const traffic = run.traffic(client, { durationMs: 7_000, concurrency: 2, pauseMs: 50 });
      let oldKid = '';
      let newKid = '';
      let rotatedAt = 0;
      let oldTokenAfterRotation = 0;
      await run.at(2_000, 'admin: keys rotate', async () => {
        const before = (await requestToken(run.auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!)).body['access_token'] as string;
        oldKid = decodeProtectedHeader(before).kid!;
        const keys = await run.admin.rotateKeys();
        rotatedAt = Date.now();
        newKid = keys.find((key) => key.state === 'current')!.kid;
        oldTokenAfterRotation = (await fetch(`${run.predictor.url}/v1/predict`, { method: 'POST', headers: { authorization: `Bearer ${before}`, 'content-type': 'application/json' }, body: '{"inputs":[[1,1,1,1]]}' })).status;
      }, 'key-rotated');
      const outcomes = await traffic;
      const records = run.predictRecords();
      const lateOld = count(records, (record) => record['kid'] === oldKid && at(record) > rotatedAt + 3_000 + 1_000);
      const stats = await run.admin.stats();
      await run.expectExactlyOnce(outcomes);
      run.expect('token signed by the old key, used after the rotation', oldTokenAfterRotation, '200', oldTokenAfterRotation === 200);
      run.expect('predictions verified with the new kid', count(records, (record) => record['kid'] === newKid), '> 0', records.some((record) => record['kid'] === newKid));
      run.expect('old kid seen after its tokens expired (TTL 3 s)', lateOld, '0', lateOld === 0);
      run.expect('401 served by the predictor', run.statusesServed().get(401) ?? 0, '0', !run.statusesServed().has(401));
      run.expect('JWKS fetches by the predictor', stats.jwksRequests, '≤ 2 (the next key was published ahead)', stats.jwksRequests <= 2);
    },
  },
  {
    name: 'emergency-key-revocation',
    summary: "Revoke the key of the caller's current token: the predictor refuses it within its bound (JWKS max age 2 s + cool-down 1 s), the caller refreshes once and continues; nothing lost or executed twice.",
    authEnv: { ACCESS_TOKEN_TTL: '60' },
    predictorEnv: { JWKS_MAX_AGE_MS: '2000', JWKS_COOLDOWN_MS: '1000' },
    async run(run) {
      const { tokens, client } = run.caller();
      const traffic = run.traffic(client, { durationMs: 8_000, concurrency: 2, pauseMs: 50 });
      let revokedKid = '';
      let revokedAt = 0;
      let tokenRequestsBefore = 0;
      await run.at(2_000, 'admin: keys revoke <current kid>', async () => {
        revokedKid = (await run.admin.listKeys()).find((key) => key.state === 'current')!.kid;
        tokenRequestsBefore = tokens.tokenRequests;
        await run.admin.revokeKey(revokedKid);
        revokedAt = Date.now();
      }, 'key-revoked');
      const outcomes = await traffic;
      const records = run.predictRecords();
      const lastAccepted = Math.max(0, ...records.filter((record) => record['kid'] === revokedKid && record['status'] === 200).map(at));
      const refusedAfter = lastAccepted - revokedAt;
      await run.expectExactlyOnce(outcomes);
      run.expect('revoked key last accepted after revocation (ms)', Math.max(0, Math.round(refusedAfter)), '≤ 3000 (documented bound)', refusedAfter <= 3_000);
      run.expect('401 served once the key was gone', run.statusesServed().get(401) ?? 0, '≥ 1', (run.statusesServed().get(401) ?? 0) >= 1);
      run.expect('token requests after the revocation', tokens.tokenRequests - tokenRequestsBefore, '1 (one refresh)', tokens.tokenRequests - tokenRequestsBefore === 1);
    },
  },
  {
    name: 'client-secret-rotation',
    summary: "Rotate the caller's secret with an overlap, write it to the caller's secret file, retire the old one: the caller picks the new secret up without a restart; the old one is invalid_client afterwards.",
    authEnv: { ACCESS_TOKEN_TTL: '2' },
    async run(run) {
      const secretFile = `${run.dataDir}/caller-secret`;
      await writeFile(secretFile, DEV_ENV['DEMO_CALLER_SECRET']!, { mode: 0o600 });
      const config = loadCallerConfig({ CLIENT_ID: 'demo-caller', CLIENT_SECRET_FILE: secretFile, ISSUER: run.auth.issuer });
      const { tokens, client } = run.caller({ secret: config.clientSecret });
      const traffic = run.traffic(client, { durationMs: 8_000, concurrency: 2, pauseMs: 50 });
      await run.at(2_000, 'admin: clients rotate-secret demo-caller --overlap 60 (new secret → secret file)', async () => {
        const { client_secret: secret } = await run.admin.rotateClientSecret('demo-caller', 60);
        (await import('../harness/processes.js')).rememberSecret(secret);
        await writeFile(secretFile, secret, { mode: 0o600 });
      }, 'secret-rotated');
      let requestsAtRetire = 0;
      await run.at(4_500, 'admin: clients retire-secret demo-caller', async () => {
        await run.admin.retirePreviousSecret('demo-caller');
        requestsAtRetire = tokens.tokenRequests;
      }, 'secret-retired');
      const outcomes = await traffic;
      const old = await requestToken(run.auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!);
      await run.eventually(() => run.auth.process.records.some((record) => record['event'] === 'token.refused'));
      const tokenFailures = run.auth.process.records.filter((record) => record['event'] === 'token.refused').length;
      await run.expectExactlyOnce(outcomes);
      run.expect('token requests by the caller after the old secret was retired', tokens.tokenRequests - requestsAtRetire, '≥ 1, all granted', tokens.tokenRequests - requestsAtRetire >= 1);
      run.expect('old secret after retirement', `${old.status} ${String(old.body['error'])}`, '401 invalid_client', old.status === 401 && old.body['error'] === 'invalid_client');
      run.expect('token requests refused by the auth-server', tokenFailures, '1 (only the check with the old secret)', tokenFailures === 1);
    },
  },
  {
    name: 'scope-revocation',
    summary: "Remove predict from the caller's client: its next token lacks it, the predictor answers 403, the caller stops at once (one attempt per call) and retries nothing.",
    authEnv: { ACCESS_TOKEN_TTL: '2' },
    async run(run) {
      const { client } = run.caller();
      const traffic = run.traffic(client, { durationMs: 6_000, concurrency: 1, pauseMs: 50 });
      await run.at(1_500, 'admin: clients set-scopes demo-caller models:read', async () => {
        await run.admin.updateClient('demo-caller', { scopes: ['models:read'] });
      }, 'scope-changed');
      const outcomes = await traffic;
      const failed = outcomes.filter((outcome) => !outcome.ok);
      const succeeded = outcomes.filter((outcome) => outcome.ok);
      await run.settled(outcomes.map((outcome) => outcome.key));
      const executions = run.executionsPerKey();
      run.expect('predictions before the change succeeded, each executed once', `${succeeded.length}`, '> 0, once each', succeeded.length > 0 && succeeded.every((outcome) => executions.get(outcome.key) === 1));
      run.expect('calls refused with 403 after the change', failed.length, '> 0', failed.length > 0 && failed.every((outcome) => outcome.error?.status === 403));
      run.expect('attempts per refused call', [...new Set(failed.map((outcome) => outcome.error?.attempts))].join(','), '1', failed.every((outcome) => outcome.error?.attempts === 1));
      run.expect('403 served by the predictor', run.statusesServed().get(403) ?? 0, `${failed.length} (nothing retried)`, (run.statusesServed().get(403) ?? 0) === failed.length);
      run.expect('no failure before the change took effect', count(outcomes, (outcome) => !outcome.ok && outcome.startedAt < 1_500), '0', !outcomes.some((outcome) => !outcome.ok && outcome.startedAt < 1_500));
    },
  },
  {
    name: 'rate-limit-storm',
    summary: 'Offered load at several times the plan (burst 3, 5/s; 8 callers in parallel): 429s with Retry-After, the caller waits as told, every prediction succeeds, each executed once.',
    plans: { plans: { standard: { burst: 3, refillPerSecond: 5, dailyQuota: 100_000 }, free: { burst: 1, refillPerSecond: 1, dailyQuota: 100 } }, defaultPlan: 'free' },
    async run(run) {
      const waits: { status: number | undefined; waitMs: number; reason: string }[] = [];
      // Eight callers of one client id, as eight instances of a service would be: each paces itself by
      // the answers it got, none sees the others' requests, so together they overrun the plan.
      const callers = Array.from({ length: 8 }, () =>
        run.caller({
          maxAttempts: 12,
          onAttempt: (event) => event.next === 'retry' && waits.push({ status: event.status, waitMs: event.waitMs, reason: event.reason }),
        }),
      );
      const outcomes = (await Promise.all(callers.map(({ client }) => run.traffic(client, { durationMs: 5_000, concurrency: 1 })))).flat();
      const limited = waits.filter((wait) => wait.status === 429);
      await run.expectExactlyOnce(outcomes);
      run.expect('429 served by the predictor', run.statusesServed().get(429) ?? 0, '> 0', (run.statusesServed().get(429) ?? 0) > 0);
      run.expect('waits after a 429 shorter than Retry-After (≥ 1 s)', count(limited, (wait) => wait.waitMs < 1_000), '0', limited.length > 0 && limited.every((wait) => wait.waitMs >= 1_000));
      run.expect('waits timed by Retry-After', count(limited, (wait) => wait.reason === 'retry-after'), `most of ${limited.length}`, count(limited, (wait) => wait.reason === 'retry-after') >= limited.length / 2);
    },
  },
  signupSpike,
  {
    name: 'lost-response',
    summary: 'A proxy drops every 5th response after the predictor answered and resets every 11th connection: the caller retries with the same key, the predictor replays, every prediction executed exactly once.',
    async run(run) {
      const proxy = await startFaultProxy({
        target: run.predictor.url,
        dropResponseEvery: 5,
        resetEvery: 11,
        onFault: (kind) => {
          run.timeline.proxyFault(kind);
          run.trace.note('Proxy', kind === 'reset' ? 'connection reset before forwarding' : 'response dropped after the predictor answered');
        },
      });
      const faults = run.timeline.event('proxy-faults', 'proxy: drops every 5th answer, resets every 11th connection');
      try {
        // The point here is idempotency, not the retry budget: give the caller room to retry every loss.
        const { client } = run.caller({ baseUrl: proxy.url, retryBudget: new RetryBudget({ maxTokens: 1_000 }), maxAttempts: 10 });
        const outcomes = await run.traffic(client, { durationMs: 4_000, concurrency: 3, pauseMs: 20 });
        run.timeline.end(faults);
        const replayed = count(run.predictRecords(), (record) => record['idempotency'] === 'replayed');
        await run.expectExactlyOnce(outcomes);
        run.expect('responses dropped by the proxy', proxy.counts.dropped, '> 0', proxy.counts.dropped > 0);
        run.expect('connections reset by the proxy', proxy.counts.reset, '> 0', proxy.counts.reset > 0);
        run.expect('replays served by the predictor', replayed, `≥ ${proxy.counts.dropped - 3} (one per dropped response)`, replayed >= proxy.counts.dropped - 3 && replayed > 0);
      } finally {
        await proxy.close();
      }
    },
  },
  {
    name: 'auth-server-outage',
    summary: 'Stop the auth-server for longer than a refresh interval but shorter than the token lifetime, then start it again: predictions continue on the cached token and cached JWKS; refresh resumes after recovery.',
    authEnv: { ACCESS_TOKEN_TTL: '12' },
    async run(run) {
      let refusedDuringOutage = 0;
      let issuedAfterRecovery = 0;
      let recovered = false;
      const { client, tokens } = run.caller({ random: () => 0 }); // refresh at 70% of 12 s = 8.4 s
      const traffic = run.traffic(client, { durationMs: 13_000, concurrency: 1, pauseMs: 100 });
      const port = run.auth.port;
      const issuer = run.auth.issuer;
      const baseline = tokens.tokenRequests;
      await run.at(1_000, 'auth-server stopped', async () => {
        await run.auth.process.stop();
      }, 'auth-server-down');
      await run.at(9_500, 'auth-server started again', async () => {
        refusedDuringOutage = tokens.tokenRequests - baseline;
        await startAuthServer({ dataDir: `${run.dataDir}/auth`, env: { AUTH_PORT: String(port), ISSUER: issuer, ACCESS_TOKEN_TTL: '12' } });
        recovered = true;
      }, 'auth-server-up');
      const outcomes = await traffic;
      issuedAfterRecovery = tokens.tokenRequests - baseline - refusedDuringOutage;
      await run.expectExactlyOnce(outcomes);
      run.expect('token requests that failed during the outage (refresh kept the valid token)', refusedDuringOutage, '≥ 1', refusedDuringOutage >= 1);
      run.expect('token requests after recovery', issuedAfterRecovery, '≥ 1', issuedAfterRecovery >= 1 && recovered);
      run.expect('401 or 503 served by the predictor', (run.statusesServed().get(401) ?? 0) + (run.statusesServed().get(503) ?? 0), '0', !run.statusesServed().has(401) && !run.statusesServed().has(503));
    },
  },
  storeOutage,
  usageExactlyOnce,
];
