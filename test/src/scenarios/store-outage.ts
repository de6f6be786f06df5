import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import pg from 'pg';
import { RetryBudget, type AttemptEvent } from 'caller';
import { requirePostgres, requireRedis, TEST_DATABASE_URL, TEST_REDIS_URL, uniqueSchemaName } from '../../../predictor/src/testing/engines.js';
import { TcpFaultProxy, type FaultMode } from '../../../predictor/src/testing/tcp-fault-proxy.js';
import { DEV_ENV, requestToken, type RunningPredictor } from '../harness/system.js';
import type { Scenario } from './catalogue.js';
import type { PredictionOutcome, ScenarioRun } from './framework.js';

type Policy = 'fail-closed' | 'degrade';

/** One predictor per failure policy (both stores under it), each behind its own proxies, schema and key prefix. */
interface Side {
  policy: Policy;
  predictor: RunningPredictor;
  postgres: TcpFaultProxy;
  redis: TcpFaultProxy;
  outcomes: PredictionOutcome[];
  /** Answers the callers and the replays got (every attempt, not only the last); each is a log line. */
  answersSeen: number;
  /** Status 500 answers the caller saw. */
  serverErrorsSeen: number;
}

/** When (ms after the traffic starts) each engine is cut or restored, on both sides at once. */
const TIMELINE: { atMs: number; postgres?: FaultMode; redis?: FaultMode; what: string }[] = [
  { atMs: 1_500, postgres: 'reset', what: 'PostgreSQL: reset on the next command (commits in flight die)' },
  { atMs: 3_000, postgres: 'refuse', what: 'PostgreSQL: connections refused' },
  { atMs: 4_500, postgres: 'up', what: 'PostgreSQL restored' },
  { atMs: 5_500, redis: 'blackhole', what: 'Redis: black hole (no answer, nothing closed)' },
  { atMs: 7_000, redis: 'up', what: 'Redis restored' },
  { atMs: 8_000, postgres: 'blackhole', redis: 'refuse', what: 'both: PostgreSQL black hole, Redis refused' },
  { atMs: 9_500, postgres: 'up', redis: 'up', what: 'both restored' },
];
const TRAFFIC_MS = 12_500;
/** Each execution takes this long, so cuts find requests between their claim and their commit. */
const SIMULATED_INFERENCE_MS = 150;
/** How long the replays after the run may wait out in-flight claims (409) before a key counts as unanswered. */
const REPLAY_DEADLINE_MS = 20_000;
/** Plenty, so that every refusal is the outage's and not the plan's. */
const PLANS = {
  plans: { standard: { burst: 10_000, refillPerSecond: 10_000, dailyQuota: 10_000_000 }, free: { burst: 1, refillPerSecond: 1, dailyQuota: 100 } },
  defaultPlan: 'free',
};

const count = <T>(items: Iterable<T>, predicate: (item: T) => boolean) => [...items].filter(predicate).length;
const perSide = (sides: Side[], value: (side: Side) => number | string) => sides.map((side) => `${side.policy} ${value(side)}`).join(', ');

export const storeOutage: Scenario = {
  name: 'store-outage',
  summary:
    'Keyed traffic at two predictors (fail-closed, degrade) while PostgreSQL and Redis are reset, refused, black-holed and restored: no key executed twice, every replay answers what the first 2xx said, no 500.',
  plans: PLANS,
  engines: ['postgres', 'redis'],
  async run(run) {
    // On a machine without the engines, fail here with what is missing and how to start it.
    await requireRedis();
    await requirePostgres();
    const runId = `${process.pid}_${Date.now().toString(36)}`;
    const sides = await Promise.all((['fail-closed', 'degrade'] as const).map((policy) => startSide(run, policy, runId)));

    const t0 = run.elapsed();
    const restoredAt = t0 + TIMELINE.at(-1)!.atMs;
    const traffic = Promise.all(
      sides.map(async (side) => {
        const { client } = run.caller({
          baseUrl: side.predictor.url,
          // Room to ride out each 1.5 s outage and a lease left by a failed commit (5 s by default);
          // a longer Retry-After ends the call (allowed) rather than stretching the run.
          maxAttempts: 10,
          retryBudget: new RetryBudget({ maxTokens: 1_000 }),
          backoff: { maxDelayMs: 5_000 },
          onAttempt: (event: AttemptEvent) => {
            if (event.status !== undefined) side.answersSeen += 1;
            if (event.status === 500) side.serverErrorsSeen += 1;
          },
        });
        // Calls that began during the last outage may still be retrying when TRAFFIC_MS ends (a fail-closed
        // call can wait out a 5 s lease): keep sending until some call started after the restore has succeeded.
        side.outcomes = await run.traffic(client, {
          durationMs: TRAFFIC_MS,
          concurrency: 3,
          pauseMs: 20,
          continueUntil: { condition: (outcomes) => outcomes.some((outcome) => outcome.ok && outcome.startedAt >= restoredAt), maxExtraMs: 30_000 },
        });
      }),
    );
    for (const step of TIMELINE) {
      await run.at(t0 + step.atMs, step.what, async () => {
        for (const side of sides) {
          if (step.postgres) side.postgres.set(step.postgres);
          if (step.redis) side.redis.set(step.redis);
        }
      }, step.postgres === 'up' || step.redis === 'up' ? 'store-restored' : 'store-cut');
    }
    await traffic;

    run.trace.note('Operator', 'engines up: every key with a 2xx sent again (same key, same body)');
    const replays = await replayEveryKey(run, sides);
    // The servers log after they answer: wait until every answer the clients saw is in the logs.
    await run.eventually(() => sides.every((side) => run.predictRecords(side.predictor).length >= side.answersSeen));

    // Across every predictor process; each side's keys are its own, so the split by side is exact. Not checked:
    // that each success has an `executed` line. A commit cut after PostgreSQL applied it is refused (503) yet
    // stored, and the retry is then replayed (seen: 503 refused, 503, 200 replayed): at most once, same answer.
    const twice = new Set([...run.executionsPerKey()].filter(([, times]) => times > 1).map(([key]) => key));
    const twiceOn = (side: Side) => count(side.outcomes, (outcome) => twice.has(outcome.key));
    const differing = replays.filter((replay) => replay.verdict === 'differs');
    const unanswered = replays.filter((replay) => replay.verdict === 'unanswered');
    const example = (items: Replay[]) => (items[0] ? `; e.g. ${items[0].detail}` : '');
    const served = (side: Side, status: number) => run.statusesServed(side.predictor).get(status) ?? 0;
    const storesDown = (side: Side) => new Set(side.predictor.process.records.filter((record) => record['event'] === 'store.down').map((record) => record['store'] as string));

    run.expect('keys executed more than once (predictor logs)', `${twice.size} (${perSide(sides, twiceOn)})`, '0', twice.size === 0);
    run.expect(
      "replays answering other than the key's first 2xx",
      `${differing.length} of ${replays.length} (${perSide(sides, (side) => count(differing, (replay) => replay.side === side))}${example(differing)})`,
      '0 (each Idempotent-Replayed: true, same id)',
      differing.length === 0 && replays.length > 0,
    );
    run.expect(`replays without a 2xx within ${REPLAY_DEADLINE_MS / 1000} s`, `${unanswered.length}${example(unanswered)}`, '0', unanswered.length === 0);
    run.expect('500 served by the predictors', perSide(sides, (side) => served(side, 500)), '0', sides.every((side) => served(side, 500) === 0));
    run.expect('500 seen by the callers', perSide(sides, (side) => side.serverErrorsSeen), '0', sides.every((side) => side.serverErrorsSeen === 0));
    run.expect('both stores logged down on each predictor', perSide(sides, (side) => storesDown(side).size), '2 each (the cuts took effect)', sides.every((side) => storesDown(side).size === 2));
    run.expect('503 served', perSide(sides, (side) => served(side, 503)), 'fail-closed > 0; degrade: reported', served(sides[0]!, 503) > 0);
    run.expect('409 served', perSide(sides, (side) => served(side, 409)), 'reported', true);
    run.expect(
      'logical predictions succeeded',
      perSide(sides, (side) => `${count(side.outcomes, (outcome) => outcome.ok)}/${side.outcomes.length}`),
      '> 0 each (fail-closed may give up during an outage)',
      sides.every((side) => side.outcomes.some((outcome) => outcome.ok)),
    );
    const afterRestore = (side: Side) => count(side.outcomes, (outcome) => outcome.ok && outcome.startedAt >= restoredAt);
    run.expect('successes started after the last restore', perSide(sides, afterRestore), '> 0 each', sides.every((side) => afterRestore(side) > 0));
  },
};

/** A predictor with both stores under `policy`, its engines behind fault proxies; everything it leaves in the engines goes when the run stops. */
async function startSide(run: ScenarioRun, policy: Policy, runId: string): Promise<Side> {
  const postgres = await TcpFaultProxy.forUrl(TEST_DATABASE_URL, 5432);
  const redis = await TcpFaultProxy.forUrl(TEST_REDIS_URL, 6379);
  const name = policy.replace('-', '_');
  const schema = uniqueSchemaName(`scenario_outage_${name}`);
  const keyPrefix = `scenario:store-outage:${runId}:${name}:`;
  run.defer(async () => {
    await Promise.all([postgres.proxy.close(), redis.proxy.close()]);
    await dropSchemaAndKeys(schema, keyPrefix);
  });
  const predictor = await run.startPredictor(`predictor-${policy}`, {
    DATABASE_URL: postgres.url,
    DATABASE_SCHEMA: schema,
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: keyPrefix,
    IDEMPOTENCY_ON_STORE_FAILURE: policy,
    RATE_LIMIT_ON_STORE_FAILURE: policy,
    SIMULATED_INFERENCE_MS: String(SIMULATED_INFERENCE_MS),
  });
  return { policy, predictor, postgres: postgres.proxy, redis: redis.proxy, outcomes: [], answersSeen: 0, serverErrorsSeen: 0 };
}

async function dropSchemaAndKeys(schema: string, keyPrefix: string): Promise<void> {
  const database = new pg.Client({ connectionString: TEST_DATABASE_URL });
  const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true });
  try {
    await database.connect();
    await database.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await redis.connect();
    const keys: string[] = [];
    for await (const batch of redis.scanStream({ match: `${keyPrefix}*` }) as AsyncIterable<string[]>) keys.push(...batch);
    if (keys.length > 0) await redis.del(...keys);
  } finally {
    await database.end().catch(() => {});
    redis.disconnect();
  }
}

interface Replay {
  side: Side;
  verdict: 'same' | 'differs' | 'unanswered';
  detail: string;
}

/**
 * Sends every key that got a 2xx again to the predictor that answered it, with the same body
 * and a fresh token: each must come back `Idempotent-Replayed: true` with the first answer's
 * prediction id. A claim still in flight (409) or a refusal (503) is waited out, up to a deadline.
 */
async function replayEveryKey(run: ScenarioRun, sides: Side[]): Promise<Replay[]> {
  const { status, body } = await requestToken(run.auth.issuer, 'demo-caller', DEV_ENV['DEMO_CALLER_SECRET']!, { scope: 'predict' });
  if (status !== 200) throw new Error(`token for the replays: ${status} ${JSON.stringify(body)}`);
  const token = body['access_token'] as string;
  const deadline = performance.now() + REPLAY_DEADLINE_MS;
  const pending = sides.flatMap((side) => side.outcomes.filter((outcome) => outcome.ok).map((outcome) => ({ side, outcome })));
  const replays: Replay[] = [];
  const replayOne = async ({ side, outcome }: (typeof pending)[number]): Promise<Replay> => {
    const where = `${side.policy} key ${outcome.key}`;
    let last = 'no attempt';
    while (performance.now() < deadline) {
      let response: Response;
      let text: string;
      try {
        response = await fetch(`${side.predictor.url}/v1/predict`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': outcome.key },
          body: JSON.stringify({ inputs: outcome.inputs }),
        });
        text = await response.text();
      } catch (error) {
        // A connection lost on the way (a keep-alive socket the server closed as it was reused): a client retries.
        last = `connection failed (${(error as Error).message})`;
        await sleep(100);
        continue;
      }
      side.answersSeen += 1;
      if (response.ok) {
        const id = (JSON.parse(text) as { id?: string }).id;
        const replayed = response.headers.get('idempotent-replayed') === 'true';
        if (replayed && id === outcome.predictionId) return { side, verdict: 'same', detail: where };
        return { side, verdict: 'differs', detail: `${where}: first ${outcome.predictionId}, replay ${id}${replayed ? '' : ' executed again'}` };
      }
      last = `last status ${response.status}`;
      if (![409, 429, 503].includes(response.status)) break;
      await sleep(Math.min(Math.max(200, Number(response.headers.get('retry-after') ?? 1) * 1000), Math.max(0, deadline - performance.now())));
    }
    return { side, verdict: 'unanswered', detail: `${where}: ${last}` };
  };
  const worker = async () => {
    for (let next = pending.shift(); next; next = pending.shift()) replays.push(await replayOne(next));
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return replays;
}
