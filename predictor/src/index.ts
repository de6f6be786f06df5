export { buildApp, type PredictorDeps } from './app.js';
export { loadPredictorConfig, type PredictorConfig } from './config.js';
export { ROUTE_SCOPES } from './auth/scopes.js';
