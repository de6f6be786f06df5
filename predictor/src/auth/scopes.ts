/** Scope required by each protected route: the one table the routes and tests read. */
export const ROUTE_SCOPES = {
  predict: 'predict',
  listModels: 'models:read',
} as const;
