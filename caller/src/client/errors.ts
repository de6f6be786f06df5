/** RFC 9457 problem details as the predictor sends them. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  [extension: string]: unknown;
}

/** The predictor answered with an error status. */
export class PredictorApiError extends Error {
  override name = 'PredictorApiError';

  constructor(
    readonly status: number,
    readonly problem: Problem | undefined,
    /** The RFC 6750 error code from WWW-Authenticate (`invalid_token`, `insufficient_scope`, …). */
    readonly authError: string | undefined,
    readonly attempts: number,
  ) {
    const reason = authError ?? problem?.detail ?? problem?.title ?? 'no details';
    super(`predictor answered ${status}: ${reason}`);
  }
}

/** The predictor could not be reached (connection refused, reset, timeout). */
export class PredictorUnreachableError extends Error {
  override name = 'PredictorUnreachableError';

  constructor(
    readonly url: string,
    options: { cause: unknown },
  ) {
    super(`predictor unreachable at ${url}: ${(options.cause as Error)?.message ?? String(options.cause)}`, options);
  }
}
