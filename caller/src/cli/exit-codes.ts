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
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];
