// The bundles `npm run build` makes: `dist/<name>.js` from `<source>`, relative to the
// repository root. The Dockerfiles' CMDs and docker-compose.yml run these names, and
// test/e2e/compose.test.ts checks them against this list, so rename here first.

/** @type {readonly { name: string; source: string }[]} */
export const ENTRIES = Object.freeze([
  { name: 'auth-server', source: 'auth-server/src/main.ts' },
  { name: 'keys-generate', source: 'auth-server/src/keys/keys-generate.ts' },
  { name: 'admin', source: 'auth-server/src/admin-cli.ts' },
  { name: 'predictor', source: 'predictor/src/main.ts' },
  // The predictor's usage relay thread (predictor/src/usage/relay-thread.ts); main.ts names this file.
  { name: 'predictor-usage-relay', source: 'predictor/src/usage/relay-worker.ts' },
  { name: 'apikey', source: 'predictor/src/apikey-cli.ts' },
  { name: 'usage-ledger', source: 'usage/src/main.ts' },
  { name: 'usage', source: 'usage/src/usage-cli.ts' },
  { name: 'caller', source: 'caller/src/cli/main.ts' },
  { name: 'demo', source: 'test/src/demo.ts' },
]);

/** Import specifiers that are this repository's own TypeScript (workspaces): bundled in, never external. */
export function isWorkspacePackage(specifier) {
  return specifier.startsWith('@m2m/') || specifier === 'caller' || specifier.startsWith('caller/');
}
