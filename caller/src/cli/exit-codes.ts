/** Exit codes of the caller CLI (contract, section 5): one per way a call can end. */
export const ExitCode = {
  ok: 0,
  unexpected: 1,
  configuration: 2,
  authentication: 3,
  authorization: 4,
  invalidRequest: 5,
  retriesExhausted: 6,
  unreachable: 7,
  /** The shared retry budget stopped the call: the predictor answered, but failed too often to keep retrying. */
  retryBudgetExhausted: 8,
  /** The daily quota is used up; the message says when it resets. */
  quotaExhausted: 9,
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];
