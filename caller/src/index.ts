export { TokenSource, assertIssuerTransport, type AccessToken, type TokenSourceOptions, type ClientAuthMethod, type TokenEvent, type TokenRequest, type ClientAssertionKey } from './tokens/token-source.js';
export { TokenRequestError } from './tokens/token-errors.js';
export { PredictorClient, type PredictResponse, type IrisRow, type PredictOptions, type PredictorClientOptions, type AttemptEvent } from './client/predictor-client.js';
export {
  PredictorCallError,
  PredictorApiError,
  PredictorUnreachableError,
  RetriesExhaustedError,
  RetryAfterTooLongError,
  RetryBudgetExhaustedError,
  QuotaExhaustedError,
  type Problem,
  type StopReason,
} from './client/errors.js';
export { RetryBudget, type RetryBudgetOptions, type RetryCause } from './retry/retry-budget.js';
export { RateLimitView, NoRoomError, type RateLimitViewOptions, type RoomRequest, type Permit } from './limits/rate-limit-view.js';
export { parseRateLimitFields, type PolicyReport } from './limits/rate-limit-fields.js';
export { systemClock, type Clock } from './retry/clock.js';
export { parseRetryAfter } from './retry/retry-after.js';
export { loadCallerConfig, type CallerConfig, type DPoPConfig } from './config.js';
export { DPoPKey, DPoPKeyError, DPOP_ALGORITHMS, DEFAULT_DPOP_ALGORITHM, accessTokenHash, type DPoPAlgorithm, type DPoPKeyOptions, type ProofRequest } from './dpop/dpop-key.js';
export { authorizationHeaders, UnprovableTokenError } from './dpop/authorization.js';
export { parseChallenges, asksForDpopNonce, type Challenge } from './client/challenges.js';
export {
  discoverAuthorizationServer,
  resourceMetadataUrl,
  sameResource,
  ResourceMetadataError,
  RESOURCE_METADATA_PATH,
  type DiscoveredResource,
  type ProtectedResourceMetadata,
  type ResourceDiscoveryOptions,
} from './discovery/resource-metadata.js';
