import { randomUUID } from 'node:crypto';
import { fullJitterDelay, type BackoffOptions } from '../retry/backoff.js';
import { systemClock, type Clock } from '../retry/clock.js';
import { parseRetryAfter } from '../retry/retry-after.js';
import { RetryBudget } from '../retry/retry-budget.js';
import type { AccessToken, TokenSource } from '../tokens/token-source.js';
import {
  PredictorApiError,
  PredictorCallError,
  PredictorUnreachableError,
  RetriesExhaustedError,
  RetryAfterTooLongError,
  type CallSummary,
  type Problem,
  type StopReason,
} from './errors.js';

export type IrisRow = [number, number, number, number];

export interface PredictResponse {
  id: string;
  model: string;
  created: number;
  predictions: { label: string; probabilities: Record<string, number> }[];
}

/** Statuses worth another attempt with the same Idempotency-Key (contract, section 5). */
const RETRYABLE_STATUSES = new Set([409, 429, 502, 503, 504]);

/** One attempt and what the client does next; emitted for every attempt. */
export interface AttemptEvent {
  idempotencyKey: string | undefined;
  attempt: number;
  /** Undefined when the attempt got no answer (connection refused, reset, timeout). */
  status: number | undefined;
  /** The network error of an attempt without an answer. */
  error: string | undefined;
  next: 'done' | 'retry' | 'refresh-token' | 'stop';
  /** Wait before the next attempt (in milliseconds); 0 unless `next` is `retry`. */
  waitMs: number;
  /** Why the wait is what it is (`backoff`, `retry-after`), or why the call ends. */
  reason: 'success' | 'backoff' | 'retry-after' | 'token-refresh' | StopReason;
}

export interface PredictorClientOptions {
  /** Base URL of the predictor, e.g. http://localhost:8080. */
  baseUrl: string;
  tokens: Pick<TokenSource, 'getToken' | 'invalidate'>;
  /** Attempts per call, including the first. Default 5. */
  maxAttempts?: number;
  /** Full-jitter backoff; every wait is capped at `maxDelayMs` (default 30 000). */
  backoff?: BackoffOptions;
  /** Timeout of one attempt (in milliseconds). Default 10 000. */
  attemptTimeoutMs?: number;
  /** Shared by every call of this client. Default: 10 retries, refilled 0.1 per success. */
  retryBudget?: RetryBudget;
  /** Idempotency key of a new logical prediction. Default: a random UUID v4. */
  newIdempotencyKey?: () => string;
  onAttempt?: (event: AttemptEvent) => void;
  clock?: Clock;
  /** Uniform [0, 1) for the jitter. Default `Math.random`. */
  random?: () => number;
  fetch?: typeof fetch;
}

export interface PredictOptions {
  /** Reuse a key to make a retried logical prediction recognisable. */
  idempotencyKey?: string;
  /** Aborting cancels the attempt or the wait in progress at once. */
  signal?: AbortSignal;
  /** Overall time for all attempts and waits (in milliseconds). */
  deadlineMs?: number;
  maxAttempts?: number;
}

/**
 * Calls the predictor: one Idempotency-Key per logical prediction, the same on every
 * attempt; bounded, jittered retries that honour Retry-After; one token refresh on
 * 401; an immediate stop on answers a retry cannot change.
 */
export class PredictorClient {
  readonly #options: PredictorClientOptions & { baseUrl: string };
  readonly #fetch: typeof fetch;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #budget: RetryBudget;

  constructor(options: PredictorClientOptions) {
    this.#options = { ...options, baseUrl: options.baseUrl.replace(/\/+$/, '') };
    this.#fetch = options.fetch ?? fetch;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#budget = options.retryBudget ?? new RetryBudget();
  }

  async predict(inputs: IrisRow[], options: PredictOptions = {}): Promise<PredictResponse> {
    const idempotencyKey = options.idempotencyKey ?? (this.#options.newIdempotencyKey ?? randomUUID)();
    return (await this.#call('POST', '/v1/predict', { inputs }, idempotencyKey, options)) as PredictResponse;
  }

  async listModels(options: Omit<PredictOptions, 'idempotencyKey'> = {}): Promise<unknown> {
    return this.#call('GET', '/v1/models', undefined, undefined, options);
  }

  async #call(method: string, path: string, body: unknown, idempotencyKey: string | undefined, options: PredictOptions): Promise<unknown> {
    const clock = this.#clock;
    const maxAttempts = options.maxAttempts ?? this.#options.maxAttempts ?? 5;
    const maxDelayMs = this.#options.backoff?.maxDelayMs ?? 30_000;
    const deadlineAt = options.deadlineMs === undefined ? Number.POSITIVE_INFINITY : clock.now() + options.deadlineMs;
    const summary: CallSummary = { attempts: 0, totalWaitMs: 0, lastStatus: undefined };
    let refreshedToken = false;
    const emit = (event: Omit<AttemptEvent, 'idempotencyKey' | 'attempt'>) => this.#options.onAttempt?.({ idempotencyKey, attempt: summary.attempts, ...event });

    for (;;) {
      if (options.signal?.aborted) throw new PredictorCallError('call aborted', 'aborted', summary, { cause: options.signal.reason });
      summary.attempts += 1;
      const token = await this.#options.tokens.getToken();
      const outcome = await this.#attempt(method, path, body, idempotencyKey, token, options.signal, deadlineAt);
      summary.lastStatus = outcome.response?.status;

      if (outcome.response?.ok) {
        this.#budget.recordSuccess();
        emit({ status: outcome.response.status, error: undefined, next: 'done', waitMs: 0, reason: 'success' });
        return outcome.response.json();
      }
      if (options.signal?.aborted) throw new PredictorCallError('call aborted', 'aborted', summary, { cause: options.signal.reason });
      const response = outcome.response;
      const status = response?.status;
      const stop = (reason: StopReason, error: PredictorCallError): never => {
        emit({ status, error: outcome.error, next: 'stop', waitMs: 0, reason });
        throw error;
      };

      // An expired or revoked token: one refresh, one replay with the same key; a second 401 is final.
      if (status === 401 && !refreshedToken) {
        refreshedToken = true;
        this.#options.tokens.invalidate(token);
        await response!.body?.cancel();
        emit({ status, error: undefined, next: 'refresh-token', waitMs: 0, reason: 'token-refresh' });
        continue;
      }
      if (response && !RETRYABLE_STATUSES.has(response.status)) {
        const problem = await readProblem(response);
        stop('not-retryable', new PredictorApiError(response.status, problem, bearerError(response.headers.get('www-authenticate')), summary));
      }

      const failure = (reason: StopReason, message: string) =>
        response ? new RetriesExhaustedError(message, reason, summary) : new PredictorUnreachableError(`predictor unreachable at ${this.#options.baseUrl}: ${outcome.error}`, reason, summary);
      await response?.body?.cancel();
      if (summary.attempts >= maxAttempts) stop('attempts-exhausted', failure('attempts-exhausted', 'retries exhausted'));
      const retryAfterMs = parseRetryAfter(response?.headers.get('retry-after'), clock.wallNow());
      if (retryAfterMs !== undefined && (retryAfterMs > maxDelayMs || clock.now() + retryAfterMs > deadlineAt)) {
        stop('retry-after-too-long', new RetryAfterTooLongError(new Date(clock.wallNow() + retryAfterMs), summary));
      }
      // Retries the server paces itself (Retry-After) don't draw on the budget; the budget
      // bounds the retries this client times on its own, which is what multiplies load.
      if (retryAfterMs === undefined && !this.#budget.tryAcquire()) stop('budget-exhausted', failure('budget-exhausted', 'retry budget exhausted'));
      const backoffMs = fullJitterDelay(summary.attempts, { ...this.#options.backoff, maxDelayMs }, this.#random);
      const waitMs = Math.max(backoffMs, retryAfterMs ?? 0);
      if (clock.now() + waitMs >= deadlineAt) stop('deadline', failure('deadline', 'deadline reached'));
      emit({ status, error: outcome.error, next: 'retry', waitMs, reason: retryAfterMs !== undefined && retryAfterMs >= backoffMs ? 'retry-after' : 'backoff' });
      try {
        await clock.sleep(waitMs, options.signal);
      } catch (error) {
        throw new PredictorCallError('call aborted', 'aborted', summary, { cause: error });
      }
      summary.totalWaitMs += waitMs;
    }
  }

  async #attempt(
    method: string,
    path: string,
    body: unknown,
    idempotencyKey: string | undefined,
    token: AccessToken,
    signal: AbortSignal | undefined,
    deadlineAt: number,
  ): Promise<{ response?: Response; error?: string }> {
    const headers: Record<string, string> = { authorization: `Bearer ${token.value}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (idempotencyKey !== undefined) headers['idempotency-key'] = idempotencyKey;
    const timeoutMs = Math.max(1, Math.min(this.#options.attemptTimeoutMs ?? 10_000, deadlineAt - this.#clock.now()));
    const attemptSignal = AbortSignal.any([AbortSignal.timeout(timeoutMs), ...(signal ? [signal] : [])]);
    try {
      const response = await this.#fetch(`${this.#options.baseUrl}${path}`, { method, headers, body: body === undefined ? null : JSON.stringify(body), signal: attemptSignal });
      return { response };
    } catch (error) {
      const cause = (error as Error & { cause?: Error }).cause;
      return { error: cause?.message ?? (error as Error).message };
    }
  }
}

async function readProblem(response: Response): Promise<Problem | undefined> {
  try {
    return (await response.json()) as Problem;
  } catch {
    return undefined;
  }
}

/** The `error` attribute of an RFC 6750 Bearer challenge. */
export function bearerError(header: string | null): string | undefined {
  return header?.match(/\berror="([^"]*)"/)?.[1];
}
