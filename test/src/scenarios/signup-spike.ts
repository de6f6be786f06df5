import { randomUUID } from 'node:crypto';
import type { TokenSource } from 'caller';
import { rememberSecret, type LogRecord } from '../harness/processes.js';
import type { Scenario } from './catalogue.js';
import type { PredictionOutcome, ScenarioRun } from './framework.js';

/**
 * The 3× sign-up spike: how a token bucket, a daily quota and short-lived tokens together keep the
 * existing clients' objectives while new sign-ups arrive in a burst.
 *
 * - The bucket (burst BURST, refill REFILL/s) lets a new client's onboarding batch through at once
 *   up to its size, answers the excess 429 with a Retry-After, and caps what any one sign-up can take
 *   afterwards at REFILL/s, however hard it pushes: the spike's admitted load is bounded by the
 *   sign-ups' refill rates (plus one bucket each), not by what they send.
 * - The daily quota (QUOTA) bounds what a runaway sign-up (a loop nobody stopped) takes in a day,
 *   whatever its rate: it gets cheap 429s until UTC midnight.
 * - Tokens live TTL_S seconds and the predictor verifies them offline: a sign-up disabled at the
 *   auth-server loses access within one token lifetime (plus the predictor's clock tolerance).
 *
 * The legitimate sign-ups use the caller library (it honours Retry-After and the rate-limit fields);
 * the onboarding script, the runaway and the abusive sign-up send plain HTTP on their own schedule,
 * as scripts do, so the predictor's answers to excess are seen as they are.
 */
const TTL_S = 3;
/** The predictor accepts a token this long past its expiry (CLOCK_TOLERANCE; 5 s by default, 1 s here: one host). */
const CLOCK_TOLERANCE_S = 1;
const BURST = 10;
const REFILL = 5;
const QUOTA = 40;
const PLANS = {
  plans: {
    standard: { burst: 20, refillPerSecond: 10, dailyQuota: 100_000 },
    trial: { burst: BURST, refillPerSecond: REFILL, dailyQuota: QUOTA },
    free: { burst: 1, refillPerSecond: 1, dailyQuota: 100 },
  },
  defaultPlan: 'free',
};

/** When (ms after the traffic starts) the phases begin. */
const SPIKE_AT_MS = 4_000;
const REVOKE_AT_MS = 7_000;
const SPIKE_END_MS = 13_000;
const TRAFFIC_MS = 16_000;
/** Existing clients: each one call at a time, this pause between calls (about 5–6 req/s each). */
const EXISTING_PAUSE_MS = 160;
/** A sign-up's onboarding batch: sent at once, more than its bucket holds. */
const ONBOARDING_BATCH = 14;
/** Legitimate sign-ups (caller library): the batch, then one call per this pause. */
const LEGIT_PAUSE_MS = 800;
const LEGIT_SIGNUPS = 6;
/** Plain-HTTP senders: one request per this interval, whatever the answers say. */
const RUNAWAY_INTERVAL_MS = 125;
const ABUSIVE_INTERVAL_MS = 250;
const SCRIPT_INTERVAL_MS = 800;
/**
 * The existing clients' objectives: answers from the predictor's log; the slowest call end to
 * end from the caller. The p99 bound is a latency a client can plan on, not this machine's
 * speed: 3–6 ms here when idle, 108 ms once with two test suites beside it on its 2 cores
 * (the old bound of 100 ms then failed); a predictor that queued the existing clients behind
 * the spike would pass seconds.
 */
const SLO = { successRatio: 0.999, p99Ms: 250, slowestCallMs: 1_000 };

const EXISTING = ['demo-caller', 'existing-batch'];
const LEGIT = Array.from({ length: LEGIT_SIGNUPS }, (_, index) => `signup-${index + 1}`);
const SCRIPT = 'signup-script';
const RUNAWAY = 'signup-runaway';
const ABUSIVE = 'signup-abusive';
const SIGNUPS = [...LEGIT, SCRIPT, RUNAWAY, ABUSIVE];

const count = <T>(items: Iterable<T>, predicate: (item: T) => boolean) => [...items].filter(predicate).length;
const wallMs = (record: LogRecord) => Date.parse(record['time'] as string);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

export const signupSpike: Scenario = {
  name: 'signup-spike',
  summary: `Two existing clients at their normal rate, then ${SIGNUPS.length} sign-ups (trial: burst ${BURST}, ${REFILL}/s, ${QUOTA} a day; tokens live ${TTL_S} s) triple the traffic for 9 s: the existing clients' SLO holds, onboarding batches pass up to the bucket, the excess gets 429 + Retry-After, the daily quota stops a runaway, a disabled sign-up loses access within one token lifetime.`,
  // Every caller here shares the loopback address: without this, the disabled sign-up's failed token
  // requests would empty the per-address failure bucket and refuse everyone's renewals (as behind a
  // load balancer; see CLIENT_AUTH_FAILURES_PER_ADDRESS). The per-client delay still applies.
  authEnv: { ACCESS_TOKEN_TTL: String(TTL_S), CLIENT_AUTH_FAILURES_PER_ADDRESS: '0' },
  predictorEnv: { CLOCK_TOLERANCE: String(CLOCK_TOLERANCE_S) },
  plans: PLANS,
  async run(run) {
    const secrets = new Map<string, string>();
    const register = async (clientId: string, plan: string) => {
      const { client_secret: secret } = await run.admin.registerClient({ client_id: clientId, scopes: ['predict'], plan });
      rememberSecret(secret!);
      secrets.set(clientId, secret!);
    };
    await register('existing-batch', 'standard');
    const callerOf = (clientId: string, options: { maxAttempts?: number } = {}) =>
      run.caller({ clientId, ...(secrets.has(clientId) ? { secret: () => secrets.get(clientId)! } : {}), ...options });

    const t0 = run.elapsed();
    const epoch0 = Date.now();
    const existing = Promise.all(EXISTING.map((clientId) => run.traffic(callerOf(clientId).client, { durationMs: TRAFFIC_MS, concurrency: 1, pauseMs: EXISTING_PAUSE_MS })));

    // The spike: the sign-ups registered through the admin API, each starting at once.
    const spike = run.timeline.event('traffic', `spike: ${SIGNUPS.length} sign-ups on the trial plan`, t0 + SPIKE_AT_MS);
    const spikeEnd = t0 + SPIKE_END_MS;
    let signups: Promise<[PredictionOutcome[][], { batch: PlainAnswer[] }, PlainAnswer[], PlainAnswer[]]> | undefined;
    await run.at(
      t0 + SPIKE_AT_MS,
      `admin: ${SIGNUPS.length} clients register (plan trial)`,
      async () => {
        await Promise.all(SIGNUPS.map((clientId) => register(clientId, 'trial')));
        const legit = Promise.all(
          LEGIT.map(async (clientId) => {
            const { client } = callerOf(clientId, { maxAttempts: 4 });
            const batch = await run.burst(client, ONBOARDING_BATCH);
            return [...batch, ...(await run.traffic(client, { durationMs: spikeEnd - run.elapsed(), concurrency: 1, pauseMs: LEGIT_PAUSE_MS }))];
          }),
        );
        const plain = (clientId: string) => new PlainSender(run, clientId, callerOf(clientId).tokens);
        const script = plain(SCRIPT);
        const scripted = (async () => {
          const batch = await Promise.all(Array.from({ length: ONBOARDING_BATCH }, () => script.send()));
          // Like a careful script: wait what the 429s asked, send those again, then go on at a steady pace.
          const waitS = Math.max(0, ...batch.map((answer) => Number(answer.retryAfter ?? 0)));
          await sleep(waitS * 1000);
          const again = await Promise.all(batch.filter((answer) => answer.status === 429).map(() => script.send()));
          return { batch, later: [...again, ...(await script.every(SCRIPT_INTERVAL_MS, spikeEnd))] };
        })();
        signups = Promise.all([legit, scripted, plain(RUNAWAY).every(RUNAWAY_INTERVAL_MS, spikeEnd), plain(ABUSIVE).every(ABUSIVE_INTERVAL_MS, spikeEnd)]);
      },
      'client-registered',
    );
    let disabledAt = 0;
    await run.at(
      t0 + REVOKE_AT_MS,
      `admin: clients disable ${ABUSIVE}`,
      async () => {
        await run.admin.updateClient(ABUSIVE, { disabled: true });
        disabledAt = Date.now();
      },
      'client-disabled',
    );
    const [legit, { batch: scriptBatch }, runaway, abusive] = await signups!;
    run.timeline.end(spike);
    const existingOutcomes = (await existing).flat();
    await run.expectExactlyOnce(existingOutcomes);
    await run.settled(legit.flat().filter((outcome) => outcome.ok).map((outcome) => outcome.key));

    const records = run.predictRecords();
    const of = (clientId: string) => records.filter((record) => record['clientId'] === clientId);
    const between = (items: LogRecord[], fromMs: number, toMs: number) => items.filter((record) => wallMs(record) - epoch0 >= fromMs && wallMs(record) - epoch0 < toMs);

    // 1. The spike tripled the load (requests reaching the predictor per second).
    const before = between(records, 1_000, SPIKE_AT_MS).length / ((SPIKE_AT_MS - 1_000) / 1000);
    const during = between(records, SPIKE_AT_MS + 500, SPIKE_END_MS - 500).length / ((SPIKE_END_MS - SPIKE_AT_MS - 1_000) / 1000);
    run.expect('requests/s at the predictor: before the spike → during it', `${before.toFixed(1)} → ${during.toFixed(1)} (${(during / before).toFixed(1)}×)`, '≈ 3× (≥ 2.5×)', during >= 2.5 * before);

    // 2. The existing clients' objectives.
    const existingRecords = EXISTING.flatMap(of);
    const good = count(existingRecords, (record) => (record['status'] as number) < 300);
    run.expect('existing clients: answers 2xx (predictor log)', `${good}/${existingRecords.length}`, `≥ ${SLO.successRatio * 100}% (SLO)`, existingRecords.length > 0 && good / existingRecords.length >= SLO.successRatio);
    const duringSpike = between(existingRecords, SPIKE_AT_MS, SPIKE_END_MS);
    const p99Before = percentile(between(existingRecords, 0, SPIKE_AT_MS).map((record) => record['durationMs'] as number), 0.99);
    const p99During = percentile(duringSpike.map((record) => record['durationMs'] as number), 0.99);
    run.expect('existing clients: p99 server time before → during the spike (ms)', `${p99Before.toFixed(1)} → ${p99During.toFixed(1)} (${duringSpike.length} requests)`, `≤ ${SLO.p99Ms} (SLO)`, duringSpike.length > 0 && p99During <= SLO.p99Ms);
    const slowest = Math.max(0, ...existingOutcomes.map((outcome) => outcome.finishedAt - outcome.startedAt));
    run.expect('existing clients: slowest call end to end, token renewals included (caller, ms)', Math.round(slowest), `≤ ${SLO.slowestCallMs}`, slowest <= SLO.slowestCallMs);

    // 3. Legitimate bursts pass up to the bucket; the excess is 429 with Retry-After, never 5xx.
    const batchAdmitted = count(scriptBatch, (answer) => answer.status === 200);
    const batchRefused = scriptBatch.filter((answer) => answer.status === 429);
    run.expect(
      `onboarding script's batch of ${ONBOARDING_BATCH} at once: 200 + 429`,
      `${batchAdmitted} + ${batchRefused.length}${batchAdmitted + batchRefused.length === ONBOARDING_BATCH ? '' : ` (other: ${scriptBatch.filter((answer) => answer.status !== 200 && answer.status !== 429).map((answer) => answer.status).join(',')})`}`,
      `${BURST} + ${ONBOARDING_BATCH - BURST} (the bucket; +1 per 200 ms the batch took)`,
      batchAdmitted >= BURST && batchAdmitted <= BURST + 1 && batchAdmitted + batchRefused.length === ONBOARDING_BATCH,
    );
    const scriptServed = count(of(SCRIPT), (record) => record['status'] === 200);
    run.expect("onboarding script's refused requests, sent again after Retry-After", `${count(of(SCRIPT).slice(ONBOARDING_BATCH, ONBOARDING_BATCH + batchRefused.length), (record) => record['status'] === 200)} of ${batchRefused.length} served`, 'all', batchRefused.length > 0 && of(SCRIPT).slice(ONBOARDING_BATCH, ONBOARDING_BATCH + batchRefused.length).every((record) => record['status'] === 200) && scriptServed > 0);
    const legitOutcomes = legit.flat();
    run.expect('legitimate sign-ups (caller library): logical predictions succeeded', `${count(legitOutcomes, (outcome) => outcome.ok)}/${legitOutcomes.length}`, 'all', legitOutcomes.length > 0 && legitOutcomes.every((outcome) => outcome.ok));
    const answers429 = run.timeline.rateLimitAnswers;
    run.expect('429s received without Retry-After', `${count(answers429, (answer) => answer.retryAfter === undefined)} of ${answers429.length}`, '0 (of > 0)', answers429.length > 0 && answers429.every((answer) => answer.retryAfter !== undefined));
    const serverErrors = count(records, (record) => (record['status'] as number) >= 500);
    run.expect('5xx served by the predictor', serverErrors, '0 (the excess is 429, never 5xx)', serverErrors === 0);

    // 4. The runaway: admitted up to its daily quota, refused for the rest of the day.
    const runawayRecords = of(RUNAWAY);
    const runawayAdmitted = count(runawayRecords, (record) => record['status'] === 200);
    run.expect(`runaway sign-up (${runaway.length} requests at ${1000 / RUNAWAY_INTERVAL_MS}/s): admitted`, runawayAdmitted, `${QUOTA} (its daily quota)`, runawayAdmitted === QUOTA);
    const untilMidnight = secondsToUtcMidnight(Date.now());
    const daily = runaway.filter((answer) => answer.status === 429 && Number(answer.retryAfter) > 60).map((answer) => Number(answer.retryAfter));
    const lastAdmitted = Math.max(...runawayRecords.filter((record) => record['status'] === 200).map(wallMs));
    const admittedAfterDaily = count(runawayRecords, (record) => (record['rateLimit'] as { violated?: string } | undefined)?.violated === 'daily' && wallMs(record) < lastAdmitted);
    run.expect(
      'runaway sign-up after its quota: 429 until UTC midnight (Retry-After, s)',
      `${daily.length} × 429, Retry-After ${daily.length > 0 ? `${Math.min(...daily)}–${Math.max(...daily)}` : 'none'}, admitted after: ${admittedAfterDaily}`,
      `> 0, ≈ ${untilMidnight}, admitted after: 0`,
      daily.length > 0 && daily.every((seconds) => Math.abs(seconds - untilMidnight) <= TRAFFIC_MS / 1000 + 5) && admittedAfterDaily === 0,
    );

    // 5. The abusive sign-up: disabled at the auth-server, locked out within one token lifetime.
    const abusiveRecords = of(ABUSIVE);
    const lastServed = Math.max(0, ...abusiveRecords.filter((record) => record['status'] === 200).map(wallMs));
    // exp and the verifier's clock are whole seconds (the clock rounded down): up to 1 s more.
    const bound = (TTL_S + CLOCK_TOLERANCE_S + 1) * 1000;
    run.expect('disabled sign-up: last 200 after it was disabled (ms)', Math.max(0, Math.round(lastServed - disabledAt)), `≤ ${bound} (token lifetime ${TTL_S} s + clock tolerance ${CLOCK_TOLERANCE_S} s + 1 s rounding)`, disabledAt > 0 && lastServed - disabledAt <= bound);
    const refusedTokens = count(run.timeline.tokens, (token) => token.clientId === ABUSIVE && token.outcome === 'failed');
    const unauthorized = count(abusive, (answer) => answer.status === 401);
    run.expect('disabled sign-up: token requests refused, then 401 for its expired token', `${refusedTokens} refused, ${unauthorized} × 401`, '≥ 1, ≥ 1', refusedTokens >= 1 && unauthorized >= 1);
  },
};

/** One answer to a plain request (status 0: no answer). */
interface PlainAnswer {
  status: number;
  retryAfter: string | undefined;
}

/**
 * A client that sends POST /v1/predict as a plain script does: a token from the caller library's
 * TokenSource (the last one it got, once it gets no more), one request per call, no retry, no pacing.
 */
class PlainSender {
  #token: string | undefined;
  readonly #fetch: typeof fetch;

  constructor(
    private readonly run: ScenarioRun,
    clientId: string,
    private readonly tokens: TokenSource,
  ) {
    this.#fetch = run.timeline.apiFetch(clientId);
  }

  async send(): Promise<PlainAnswer> {
    this.#token = await this.tokens.getToken().then((token) => token.value, () => this.#token);
    if (!this.#token) return { status: 0, retryAfter: undefined };
    try {
      const response = await this.#fetch(`${this.run.predictor.url}/v1/predict`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.#token}`, 'content-type': 'application/json', 'idempotency-key': randomUUID() },
        body: JSON.stringify({ inputs: [[5.1, 3.5, 1.4, 0.2]] }),
      });
      await response.arrayBuffer();
      return { status: response.status, retryAfter: response.headers.get('retry-after') ?? undefined };
    } catch {
      return { status: 0, retryAfter: undefined };
    }
  }

  /** One request every `intervalMs` (on a fixed schedule, not after the answer) until `untilMs` of the run. */
  async every(intervalMs: number, untilMs: number): Promise<PlainAnswer[]> {
    const sent: Promise<PlainAnswer>[] = [];
    for (let next = this.run.elapsed(); next < untilMs; next += intervalMs) {
      await sleep(next - this.run.elapsed());
      sent.push(this.send());
    }
    return Promise.all(sent);
  }
}

/** The q-quantile (nearest rank) of some numbers; 0 for none. */
function percentile(values: number[], q: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

function secondsToUtcMidnight(nowMs: number): number {
  const day = 86_400_000;
  return Math.ceil((Math.floor(nowMs / day + 1) * day - nowMs) / 1000);
}
