import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, EnvReader } from '@m2m/common';
import { SqliteApiKeyStore } from './auth/api-key-store-sqlite.js';
import { newApiKey } from './auth/api-keys.js';
import { ROUTE_SCOPES } from './auth/scopes.js';
import { DEFAULT_PLANS_PATH, loadPlansFile } from './limits/plans.js';

// `npm run apikey -- create --client <id> --scopes predict,models:read --plan standard`
// `npm run apikey -- list` / `npm run apikey -- revoke <key id>`
// Works on the predictor's data directory; a running predictor sees changes at once.

const USAGE = `usage: npm run apikey -- <command>
  create --client <client id> --scopes <scope,scope> --plan <plan>   prints the new key once
  list                                                                 ids, clients, scopes, plans, state
  revoke <key id>                                                      the key stops working at once
environment: PREDICTOR_DATA_DIR (default .data/predictor), PLANS_FILE`;

const KNOWN_SCOPES = new Set<string>(Object.values(ROUTE_SCOPES));

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { client: { type: 'string' }, scopes: { type: 'string' }, plan: { type: 'string' } },
  });
  const read = new EnvReader(process.env);
  const store = SqliteApiKeyStore.open(join(read.string('PREDICTOR_DATA_DIR', '.data/predictor'), 'api-keys.db'));
  try {
    switch (positionals[0]) {
      case 'create': {
        const { client, scopes, plan } = values;
        if (!client || !scopes || !plan) throw new ConfigError('create needs --client, --scopes and --plan');
        const scopeList = scopes.split(/[,\s]+/).filter(Boolean);
        const unknown = scopeList.find((scope) => !KNOWN_SCOPES.has(scope));
        if (unknown) throw new ConfigError(`unknown scope "${unknown}" (known: ${[...KNOWN_SCOPES].join(', ')})`);
        const plans = await loadPlansFile(read.string('PLANS_FILE', DEFAULT_PLANS_PATH));
        if (!plans.plans.has(plan)) throw new ConfigError(`unknown plan "${plan}" (known: ${[...plans.plans.keys()].join(', ')})`);
        const { apiKey, record } = newApiKey({ clientId: client, scopes: scopeList, plan, now: new Date() });
        await store.insert(record);
        process.stderr.write(`created API key ${record.id} for ${client} (${scopeList.join(' ')}, plan ${plan}); it is shown once:\n`);
        process.stdout.write(`${apiKey}\n`);
        return 0;
      }
      case 'list':
        for (const record of await store.list()) {
          process.stdout.write(`${record.id}  ${record.clientId}  ${record.scopes.join(' ')}  ${record.plan}  ${record.revokedAt ? `revoked ${record.revokedAt}` : 'active'}\n`);
        }
        return 0;
      case 'revoke': {
        const id = positionals[1];
        if (!id) throw new ConfigError('revoke needs a key id');
        if (!(await store.revoke(id, new Date().toISOString()))) throw new ConfigError(`no API key ${id}`);
        process.stderr.write(`revoked API key ${id}\n`);
        return 0;
      }
      default:
        process.stderr.write(`${USAGE}\n`);
        return 2;
    }
  } finally {
    await store.close();
  }
}

main().then(
  (code) => (process.exitCode = code),
  (error: unknown) => {
    process.stderr.write(`apikey: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 2;
  },
);
