import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { AdminClient } from '@m2m/auth-server/admin-client';
import { PredictorCallError, PredictorClient, TokenSource, type AttemptEvent, type IrisRow, type PredictorClientOptions, type RetryBudget } from 'caller';
import { stopAll, temporaryDirectory, type LogRecord } from '../harness/processes.js';
import { DEV_ENV, startAuthServer, startPredictor, type RunningAuthServer, type RunningPredictor } from '../harness/system.js';
import { Timeline, type EventKind } from '../report/timeline.js';
import { Trace } from './trace.js';

export interface Evidence {
  what: string;
  observed: string | number;
  expected: string;
  ok: boolean;
}

export interface PredictionOutcome {
  key: string;
  ok: boolean;
  /** For failures: status and why the call stopped. */
  error?: { status: number | undefined; reason: string; attempts: number; message: string };
  startedAt: number;
  /** When the call ended (ms since the run started), with its answer or its failure. */
  finishedAt: number;
  /** The rows sent, so the same request can be sent again. */
  inputs: IrisRow[];
  /** For successes: the `id` of the prediction in the first 2xx answer. */
  predictionId?: string;
}

const ROWS: IrisRow[] = [
  [5.1, 3.5, 1.4, 0.2],
  [6.0, 2.7, 4.1, 1.0],
  [6.7, 3.0, 5.2, 2.3],
];

/**
 * One scenario run: its own auth-server and predictor on free ports, callers built
 * from the caller library with their attempts traced, and the servers' own logs and
 * counters as the evidence.
 */
export class ScenarioRun {
  readonly trace = new Trace();
  /** What the callers saw and the operator did, for the report. */
  readonly timeline = new Timeline();
  readonly evidence: Evidence[] = [];
  /** Predictors started by the scenario itself (startPredictor), beside the run's own. */
  readonly #extraPredictors: RunningPredictor[] = [];
  /** Run after the processes stopped, last registered first. */
  readonly #deferred: (() => Promise<void>)[] = [];

  private constructor(
    readonly auth: RunningAuthServer,
    readonly predictor: RunningPredictor,
    readonly admin: AdminClient,
    readonly dataDir: string,
    private readonly predictorEnv: Record<string, string>,
    private readonly cleanup: () => Promise<void>,
  ) {}

  static async start(options: { authEnv?: Record<string, string>; predictorEnv?: Record<string, string>; plans?: unknown } = {}): Promise<ScenarioRun> {
    const dir = await temporaryDirectory('scenario');
    const planEnv: Record<string, string> = {};
    if (options.plans) {
      planEnv['PLANS_FILE'] = `${dir.path}/plans.json`;
      await writeFile(planEnv['PLANS_FILE'], JSON.stringify(options.plans));
    }
    const auth = await startAuthServer({ dataDir: `${dir.path}/auth`, env: { KEY_PROPAGATION_SECONDS: '0', ...options.authEnv } });
    const predictor = await startPredictor({ issuer: auth.issuer, dataDir: `${dir.path}/predictor`, env: { IDEMPOTENCY_STORE: 'sqlite', ...planEnv, ...options.predictorEnv } });
    return new ScenarioRun(auth, predictor, new AdminClient(auth.adminUrl, DEV_ENV['ADMIN_TOKEN']!), dir.path, planEnv, dir.remove);
  }

  /**
   * Another predictor on the run's auth-server (the run's plans, `env` on top), e.g. one per
   * failure policy; its log lines count in predictRecords() and the other evidence.
   */
  async startPredictor(name: string, env: Record<string, string>): Promise<RunningPredictor> {
    const predictor = await startPredictor({ issuer: this.auth.issuer, dataDir: `${this.dataDir}/${name}`, env: { ...this.predictorEnv, ...env } });
    this.#extraPredictors.push(predictor);
    return predictor;
  }

  /** Every predictor of the run: its own first, then those the scenario started. */
  get predictors(): RunningPredictor[] {
    return [this.predictor, ...this.#extraPredictors];
  }

  /** Runs `cleanup` when the run stops, after its processes (proxies to close, schemas to drop). */
  defer(cleanup: () => Promise<void>): void {
    this.#deferred.push(cleanup);
  }

  /** Milliseconds since the run started. */
  elapsed(): number {
    return this.timeline.now();
  }

  /** A caller (TokenSource + PredictorClient) whose token requests and attempts go into the trace. */
  caller(
    options: {
      clientId?: string;
      secret?: () => string;
      baseUrl?: string;
      maxAttempts?: number;
      backoff?: PredictorClientOptions['backoff'];
      random?: () => number;
      retryBudget?: RetryBudget;
      onAttempt?: (event: AttemptEvent) => void;
    } = {},
  ) {
    const clientId = options.clientId ?? 'demo-caller';
    // A base URL that is none of the run's predictors is a proxy in front of one.
    const target = options.baseUrl && !this.predictors.some((predictor) => predictor.url === options.baseUrl) ? 'Proxy' : 'Predictor';
    let kid: string | undefined;
    let issued = 0;
    const tokens = new TokenSource({
      issuer: this.auth.issuer,
      clientId,
      clientSecret: options.secret ?? (() => DEV_ENV['DEMO_CALLER_SECRET']!),
      ...(options.random ? { random: options.random } : {}),
      fetch: this.timeline.tokenFetch((seen) => (kid = seen)),
      onEvent: (event) => {
        if (event.kind === 'requested') return;
        const request = `POST /token (${clientId}${event.attempt > 1 ? `, attempt ${event.attempt}` : ''})`;
        if (event.kind === 'issued') {
          this.timeline.tokens.push({ clientId, atMs: this.elapsed(), outcome: 'issued', ...(kid ? { kid } : {}), first: issued++ === 0 });
          this.trace.exchange('Caller', 'AuthServer', request, `token kid ${kid ?? '?'} scope="${event.scope ?? ''}" ttl ${Math.round((event.lifetimeMs ?? 0) / 1000)}s`, { standalone: true });
        } else {
          this.timeline.tokens.push({ clientId, atMs: this.elapsed(), outcome: 'failed', error: event.error ?? 'error', first: issued === 0 });
          this.trace.exchange('Caller', 'AuthServer', request, `token refused: ${event.error}`, { standalone: true });
        }
        kid = undefined;
      },
    });
    const client = new PredictorClient({
      baseUrl: options.baseUrl ?? this.predictor.url,
      tokens,
      fetch: this.timeline.apiFetch(clientId),
      ...(options.maxAttempts ? { maxAttempts: options.maxAttempts } : {}),
      ...(options.backoff ? { backoff: options.backoff } : {}),
      ...(options.retryBudget ? { retryBudget: options.retryBudget } : {}),
      onAttempt: (event) => {
        options.onAttempt?.(event);
        const answer = event.status === undefined ? `no answer (${event.error ?? 'network'})` : String(event.status);
        const next = event.next === 'retry' ? `wait ${event.reason === 'retry-after' ? `${Math.round(event.waitMs / 100) / 10}s (retry-after)` : '(backoff)'}` : event.next === 'refresh-token' ? 'refresh token, replay' : event.next;
        this.trace.exchange('Caller', target, `POST /v1/predict attempt ${event.attempt}${clientId === 'demo-caller' ? '' : ` (${clientId})`}`, `${answer} → ${next}`);
      },
    });
    return { tokens, client };
  }

  /**
   * Logical predictions, `concurrency` at a time, each with its own key, until `durationMs` has passed
   * and, if given, `continueUntil` holds on the outcomes so far (checked up to `durationMs + maxExtraMs`):
   * a check about calls made after some event waits for such calls instead of hoping the timing left room.
   */
  async traffic(
    client: PredictorClient,
    options: { durationMs: number; concurrency?: number; pauseMs?: number; continueUntil?: { condition: (outcomes: PredictionOutcome[]) => boolean; maxExtraMs: number } },
  ): Promise<PredictionOutcome[]> {
    const outcomes: PredictionOutcome[] = [];
    const until = this.elapsed() + options.durationMs;
    const hardStop = until + (options.continueUntil?.maxExtraMs ?? 0);
    const keepGoing = () => {
      const now = this.elapsed();
      if (now < until) return true;
      return options.continueUntil !== undefined && now < hardStop && !options.continueUntil.condition(outcomes);
    };
    let index = 0;
    const worker = async () => {
      while (keepGoing()) {
        outcomes.push(await this.#predictOnce(client, [ROWS[index++ % ROWS.length]!]));
        if (options.pauseMs) await new Promise((resolve) => setTimeout(resolve, options.pauseMs));
      }
    };
    await Promise.all(Array.from({ length: options.concurrency ?? 1 }, worker));
    return outcomes;
  }

  /** `count` logical predictions sent at once (an onboarding batch, a client's burst), each with its own key. */
  async burst(client: PredictorClient, count: number): Promise<PredictionOutcome[]> {
    return Promise.all(Array.from({ length: count }, (_, index) => this.#predictOnce(client, [ROWS[index % ROWS.length]!])));
  }

  async #predictOnce(client: PredictorClient, inputs: IrisRow[]): Promise<PredictionOutcome> {
    const key = randomUUID();
    const startedAt = this.elapsed();
    try {
      const { id } = await client.predict(inputs, { idempotencyKey: key });
      return { key, ok: true, startedAt, finishedAt: this.elapsed(), inputs, predictionId: id };
    } catch (error) {
      const failure = error as PredictorCallError;
      return { key, ok: false, startedAt, finishedAt: this.elapsed(), inputs, error: { status: failure.lastStatus, reason: failure.reason ?? 'error', attempts: failure.attempts ?? 0, message: failure.message } };
    }
  }

  /** Runs `change` once `atMs` of the run have passed (while traffic flows), and traces it; `kind` picks its mark in the report. */
  async at(atMs: number, description: string, change: () => Promise<void>, kind: EventKind = 'change'): Promise<void> {
    const wait = atMs - this.elapsed();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    this.trace.note('Operator', description);
    this.timeline.event(kind, description);
    await change();
  }

  /** The request log lines for POST /v1/predict of one predictor, or of all the run's predictors. */
  predictRecords(predictor?: RunningPredictor): LogRecord[] {
    return (predictor ? [predictor] : this.predictors).flatMap((one) => one.process.records.filter((record) => record['route'] === '/v1/predict' && record.msg === 'request'));
  }

  /** How many times the predictors ran the model for each idempotency key. */
  executionsPerKey(): Map<string, number> {
    const executions = new Map<string, number>();
    for (const record of this.predictRecords()) {
      if (record['idempotency'] !== 'executed') continue;
      const key = record['idempotencyKey'] as string;
      executions.set(key, (executions.get(key) ?? 0) + 1);
    }
    return executions;
  }

  /** Status codes one predictor, or all of them, served on POST /v1/predict. */
  statusesServed(predictor?: RunningPredictor): Map<number, number> {
    const statuses = new Map<number, number>();
    for (const record of this.predictRecords(predictor)) statuses.set(record['status'] as number, (statuses.get(record['status'] as number) ?? 0) + 1);
    return statuses;
  }

  /** Waits (polling, bounded) until `condition` holds: the servers log after they answer. */
  async eventually(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (!condition() && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  }

  expect(what: string, observed: string | number, expected: string, ok: boolean): void {
    this.evidence.push({ what, observed, expected, ok });
  }

  /** Resolves once the predictor has logged its final answer for every given key (the log line follows the answer). */
  async settled(keys: string[], timeoutMs = 5_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    const logged = () => {
      const seen = new Set(this.predictRecords().filter((record) => (record['status'] as number) < 300 || record['status'] === 403).map((record) => record['idempotencyKey']));
      return keys.every((key) => seen.has(key));
    };
    while (!logged() && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  }

  /** The checks every scenario makes: no prediction lost, none executed twice. */
  async expectExactlyOnce(outcomes: PredictionOutcome[]): Promise<void> {
    const succeeded = outcomes.filter((outcome) => outcome.ok);
    await this.settled(succeeded.map((outcome) => outcome.key));
    const executions = this.executionsPerKey();
    const twice = [...executions.values()].filter((count) => count > 1).length;
    const lost = succeeded.filter((outcome) => executions.get(outcome.key) !== 1).length;
    const firstFailure = outcomes.find((outcome) => !outcome.ok)?.error?.message;
    this.expect('logical predictions succeeded', `${succeeded.length}/${outcomes.length}${firstFailure ? ` (first failure: ${firstFailure})` : ''}`, 'all', succeeded.length === outcomes.length && outcomes.length > 0);
    this.expect('keys executed more than once (predictor log)', twice, '0', twice === 0);
    this.expect('successful predictions without exactly one execution', lost, '0', lost === 0);
  }

  async stop(): Promise<void> {
    // Every cleanup runs even when the log audit or an earlier cleanup fails; the first failure is reported.
    const failures: unknown[] = [];
    for (const step of [stopAll, ...this.#deferred.splice(0).reverse(), this.cleanup]) await step().catch((error: unknown) => failures.push(error));
    if (failures.length > 0) throw failures[0];
  }
}
