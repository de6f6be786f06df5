export { TokenSource, assertIssuerTransport, type AccessToken, type TokenSourceOptions, type ClientAuthMethod } from './tokens/token-source.js';
export { TokenRequestError } from './tokens/token-errors.js';
export { PredictorClient, type PredictResponse, type IrisRow, type PredictOptions } from './client/predictor-client.js';
export { PredictorApiError, PredictorUnreachableError, type Problem } from './client/errors.js';
export { loadCallerConfig, type CallerConfig } from './config.js';
