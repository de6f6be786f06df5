export { TokenSource, assertIssuerTransport, type AccessToken, type TokenSourceOptions, type ClientAuthMethod, type TokenEvent, type TokenRequest, type ClientAssertionKey } from './tokens/token-source.js';
export { TokenRequestError } from './tokens/token-errors.js';
export { PredictorClient, type PredictResponse, type IrisRow, type PredictOptions, type PredictorClientOptions, type AttemptEvent } from './client/predictor-client.js';
export {
  PredictorCallError,
  PredictorApiError,
  PredictorUnreachableError,
  RetriesExhaustedError,
  RetryAfterTooLongError,
  type Problem,
  type StopReason,
} from './client/errors.js';
export { RetryBudget, type RetryBudgetOptions } from './retry/retry-budget.js';
export { systemClock, type Clock } from './retry/clock.js';
export { parseRetryAfter } from './retry/retry-after.js';
export { loadCallerConfig, type CallerConfig } from './config.js';
