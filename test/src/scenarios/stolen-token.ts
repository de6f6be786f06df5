import { decodeJwt, decodeProtectedHeader } from 'jose';
import { DEV_ENV } from '../harness/system.js';
import { freePort } from '../harness/processes.js';
import { DPoPKey, PredictorClient, TokenSource, parseChallenges, type AttemptEvent, type IrisRow } from 'caller';
import type { Scenario } from './catalogue.js';
import type { PredictionOutcome, ScenarioRun } from './framework.js';

/**
 * A stolen token (RFC 9449's threat): a compromised intermediary (a proxy, a log) sees the
 * caller's requests and replays what it saw. A bearer token works for it; a DPoP-bound token does
 * not — not as Bearer, not without a proof, not with the proof it copied (used once already, and
 * made for one request), not with a proof of its own key — while the caller who holds the key goes
 * on unaffected. The predictor runs on a port chosen ahead with that URL as its public URL, since a
 * proof names the URL the caller calls (`htu`).
 */
const ROW: IrisRow = [5.1, 3.5, 1.4, 0.2];
const ROUNDS = 5;

interface Seen {
  headers: Headers;
  url: string;
}

/** A fetch that lets the "intermediary" see every request the caller sends (its headers and URL). */
function tapped(seen: Seen[]): typeof fetch {
  return async (input, init) => {
    seen.push({ headers: new Headers(init?.headers), url: String(input) });
    return fetch(input, init);
  };
}

export const stolenToken: Scenario = {
  name: 'stolen-token',
  summary: 'A third party replays captured tokens: the bearer token is accepted; the DPoP-bound one is refused (401) as Bearer, without a proof, with the copied proof and with its own key; the legitimate caller goes on unaffected.',
  async run(run: ScenarioRun) {
    const port = await freePort();
    const predictor = await run.startPredictor('dpop', { PREDICTOR_PORT: String(port), PREDICTOR_PUBLIC_URL: `http://localhost:${port}` });
    const predictUrl = `${predictor.url}/v1/predict`;
    const body = JSON.stringify({ inputs: [ROW] });
    /** The third party's request, with the headers it chose; its status and the challenge's error. */
    const replay = async (label: string, headers: Record<string, string>, target = predictUrl, method = 'POST') => {
      const response = await fetch(target, { method, headers: { 'content-type': 'application/json', ...headers }, ...(method === 'POST' ? { body } : {}) });
      await response.body?.cancel();
      const error = parseChallenges(response.headers.get('www-authenticate')).find((challenge) => challenge.params['error'])?.params['error'];
      run.trace.exchange('Proxy', 'Predictor', `${method} ${new URL(target).pathname} ${label}`, `${response.status}${error ? ` ${error}` : ''}`);
      return { status: response.status, error };
    };
    const secret = () => DEV_ENV['DEMO_CALLER_SECRET']!;

    // 1. A bearer token, seen in transit and replayed: it works for whoever holds it.
    run.trace.note('Proxy', 'a compromised intermediary records the requests it forwards');
    const bearerSeen: Seen[] = [];
    const bearerCaller = new PredictorClient({ baseUrl: predictor.url, tokens: new TokenSource({ issuer: run.auth.issuer, clientId: 'demo-caller', clientSecret: secret }), fetch: tapped(bearerSeen) });
    await bearerCaller.predict([ROW]);
    const bearerReplay = await replay('replaying the captured Bearer token', { authorization: bearerSeen[0]!.headers.get('authorization')! });

    // 2. A DPoP-bound token: the caller keeps its key; the intermediary sees token and proof.
    const key = await DPoPKey.generate();
    const boundTokens = new TokenSource({ issuer: run.auth.issuer, clientId: 'demo-caller', clientSecret: secret, dpop: key });
    // Fetched up front (the calls below reuse it from the cache) so that the trace shows it, with its kid.
    const bound = await boundTokens.getToken();
    run.trace.exchange('Caller', 'AuthServer', 'POST /token (demo-caller, DPoP proof)', `token kid ${decodeProtectedHeader(bound.value).kid ?? '?'} type ${bound.tokenType ?? 'Bearer'}`, { standalone: true });
    const boundSeen: Seen[] = [];
    const events: AttemptEvent[] = [];
    const boundCaller = new PredictorClient({ baseUrl: predictor.url, tokens: boundTokens, fetch: tapped(boundSeen), onAttempt: (event) => events.push(event) });
    const thief = await DPoPKey.generate();
    const refusals: { what: string; status: number; error: string | undefined }[] = [];
    const outcomes: PredictionOutcome[] = [];
    for (let round = 1; round <= ROUNDS; round += 1) {
      // The caller's call, then every replay the intermediary can make of what it just saw.
      const key = `stolen-token-${round}-${Date.now()}`;
      const startedAt = run.elapsed();
      const outcome = await boundCaller.predict([ROW], { idempotencyKey: key }).then(
        ({ id }) => ({ ok: true, predictionId: id }),
        (error: unknown) => ({ ok: false, error: { status: undefined, reason: 'error', attempts: 0, message: error instanceof Error ? error.message : String(error) } }),
      );
      outcomes.push({ key, startedAt, finishedAt: run.elapsed(), inputs: [ROW], ...outcome });
      run.trace.exchange('Caller', 'Predictor', `POST /v1/predict (DPoP, round ${round})`, String(events.at(-1)?.status ?? 'no answer'));
      const captured = boundSeen.at(-1)!;
      const token = captured.headers.get('authorization')!.replace(/^DPoP /, '');
      const copiedProof = captured.headers.get('dpop')!;
      for (const [what, headers, target, method] of [
        ['as Bearer', { authorization: `Bearer ${token}` }, predictUrl, 'POST'],
        ['as DPoP without a proof', { authorization: `DPoP ${token}` }, predictUrl, 'POST'],
        ['with the copied proof', { authorization: `DPoP ${token}`, dpop: copiedProof }, predictUrl, 'POST'],
        ['with the copied proof on another request', { authorization: `DPoP ${token}`, dpop: copiedProof }, `${predictor.url}/v1/models`, 'GET'],
        ['with a proof of its own key', { authorization: `DPoP ${token}`, dpop: await thief.proof({ method: 'POST', url: predictUrl, accessToken: token }) }, predictUrl, 'POST'],
      ] as const) {
        refusals.push({ what, ...(await replay(`replaying the bound token ${what}`, headers, target, method)) });
      }
    }

    const refusedBy = (what: string) => refusals.filter((refusal) => refusal.what === what);
    const describe = (what: string) => {
      const seen = refusedBy(what);
      const statuses = [...new Set(seen.map((refusal) => `${refusal.status} ${refusal.error ?? ''}`.trim()))].join(', ');
      return { observed: `${seen.length}× ${statuses}`, ok: seen.length === ROUNDS && seen.every((refusal) => refusal.status === 401) };
    };
    run.expect('captured bearer token replayed by the third party', bearerReplay.status, '200 (a bearer token works for whoever holds it)', bearerReplay.status === 200);
    for (const what of ['as Bearer', 'as DPoP without a proof', 'with the copied proof', 'with the copied proof on another request', 'with a proof of its own key']) {
      const { observed, ok } = describe(what);
      run.expect(`bound token replayed ${what}`, observed, `${ROUNDS}× 401`, ok);
    }
    const boundToken = await boundTokens.getToken();
    const jkt = (decodeJwt(boundToken.value)['cnf'] as { jkt?: string } | undefined)?.jkt;
    run.expect('the legitimate caller’s token (token_type, cnf.jkt)', `${boundToken.tokenType}, ${jkt === key.thumbprint ? 'its key' : (jkt ?? 'none')}`, 'DPoP, its key', boundToken.tokenType === 'DPoP' && jkt === key.thumbprint);
    // Its predictions between the replays: all succeeded, each executed exactly once.
    await run.expectExactlyOnce(outcomes);
    const caller401 = events.filter((event) => event.status === 401 && event.reason !== 'dpop-nonce').length;
    run.expect('the legitimate caller’s attempts refused with 401', caller401, '0', caller401 === 0);
    run.expect('token requests by the legitimate caller', boundTokens.tokenRequests, '1 (its token never invalidated by the replays)', boundTokens.tokenRequests === 1);
    // The predictor's own log: one 401 per refused replay, and the replayed bearer token's 200.
    const expected401 = refusals.filter((refusal) => refusal.what !== 'with the copied proof on another request').length;
    await run.eventually(() => (run.statusesServed(predictor).get(401) ?? 0) >= expected401); // it logs after it answers
    const served = run.statusesServed(predictor);
    run.expect('401 served on POST /v1/predict (predictor log)', served.get(401) ?? 0, String(expected401), (served.get(401) ?? 0) === expected401);
  },
};
