export { loadAuthServerConfig, type AuthServerConfig } from './config.js';
export { startAuthServer, type RunningAuthServer } from './app.js';
export { PREDICTOR_SCOPES } from './provider.js';
export { DEMO_CLIENTS, type ClientRegistration } from './clients/seeds.js';
export { AdminClient, AdminRequestError } from './admin/admin-client.js';
export type { KeyView, ClientView } from './operations.js';
