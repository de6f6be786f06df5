/** RFC 9457 problem details as the predictor sends them. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  [extension: string]: unknown;
}

/** Why a call stopped without a result. */
export type StopReason =
  | 'not-retryable' // the answer cannot change on retry (400, 403, 413, 415, 422, a second 401)
  | 'attempts-exhausted'
  | 'retry-after-too-long' // the server asked for a wait beyond the cap or the deadline
  | 'budget-exhausted' // the shared retry budget is empty: fail fast, don't add load
  | 'quota-exhausted' // the client's daily quota is used up until `resetsAt`: no attempt can succeed before
  | 'deadline'
  | 'aborted';

export interface CallSummary {
  attempts: number;
  /** Sum of the waits between attempts (in milliseconds). */
  totalWaitMs: number;
  /** Status of the last answer; undefined when the last attempt got none (network). */
  lastStatus: number | undefined;
}

/** Every failed predictor call: says how many attempts, how long it waited, the last status and why it stopped. */
export class PredictorCallError extends Error {
  override name = 'PredictorCallError';
  readonly attempts: number;
  readonly totalWaitMs: number;
  readonly lastStatus: number | undefined;

  constructor(
    message: string,
    readonly reason: StopReason,
    summary: CallSummary,
    options?: { cause?: unknown },
  ) {
    const status = summary.lastStatus === undefined ? 'no answer' : `last status ${summary.lastStatus}`;
    super(`${message} (${summary.attempts} attempt${summary.attempts === 1 ? '' : 's'}, waited ${Math.round(summary.totalWaitMs)} ms, ${status}, stopped: ${reason})`, options);
    this.attempts = summary.attempts;
    this.totalWaitMs = summary.totalWaitMs;
    this.lastStatus = summary.lastStatus;
  }
}

/** The predictor answered with an error status that the caller should not retry. */
export class PredictorApiError extends PredictorCallError {
  override name = 'PredictorApiError';

  constructor(
    readonly status: number,
    readonly problem: Problem | undefined,
    /** The RFC 6750 error code from WWW-Authenticate (`invalid_token`, `insufficient_scope`, …). */
    readonly authError: string | undefined,
    summary: CallSummary,
  ) {
    super(`predictor answered ${status}: ${authError ?? problem?.detail ?? problem?.title ?? 'no details'}${authError && problem?.detail ? ` (${problem.detail})` : ''}`, 'not-retryable', summary);
  }
}

/** Retries ran out (attempts, budget or deadline) while the predictor kept refusing or failing. */
export class RetriesExhaustedError extends PredictorCallError {
  override name = 'RetriesExhaustedError';
}

/**
 * The client's shared retry budget refused another retry: its recent attempts failed too often
 * (the predictor may well be reachable). Failing fast here is what keeps a crowd of calls from
 * multiplying the load on a struggling server.
 */
export class RetryBudgetExhaustedError extends RetriesExhaustedError {
  override name = 'RetryBudgetExhaustedError';

  constructor(
    /** What the last attempt got: its status, or the network error when nothing came back. */
    lastOutcome: string,
    summary: CallSummary,
  ) {
    super(`retry budget exhausted: too many of this client's recent attempts failed to retry again (last attempt: ${lastOutcome})`, 'budget-exhausted', summary);
  }
}

/** The predictor asked to come back later than the caller may wait; `retryAt` says when. */
export class RetryAfterTooLongError extends PredictorCallError {
  override name = 'RetryAfterTooLongError';

  constructor(
    readonly retryAt: Date,
    summary: CallSummary,
  ) {
    super(`predictor asked to retry at ${retryAt.toISOString()}, beyond the wait cap or the deadline`, 'retry-after-too-long', summary);
  }
}

/** No answer at all (connection refused, reset, timeout) on the last attempt. */
export class PredictorUnreachableError extends PredictorCallError {
  override name = 'PredictorUnreachableError';
}

/** The client's daily quota is used up: no call can succeed before `resetsAt`, so none is attempted. */
export class QuotaExhaustedError extends PredictorCallError {
  override name = 'QuotaExhaustedError';

  constructor(
    readonly resetsAt: Date,
    summary: CallSummary,
  ) {
    super(`the daily quota is used up until ${resetsAt.toISOString()}`, 'quota-exhausted', summary);
  }
}
