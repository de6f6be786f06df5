import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ConfigError, EnvReader, type Env } from '@m2m/common';
import { isUsageDay, type UsageFilter, type UsageLedger } from './ledger.js';
import { PostgresUsageLedger } from './ledger-postgres.js';
import { SqliteUsageLedger, UsageLedgerNotFound } from './ledger-sqlite.js';
import { formatUsageTable, usageReport } from './report.js';

// `npm run usage -- report [--client ID] [--day YYYY-MM-DD] [--json]`
// Exit status: 0 done, 1 the ledger cannot be opened or read, 2 bad arguments or environment.

const SYNOPSIS = 'npm run usage -- report [--client ID] [--day YYYY-MM-DD] [--json]';

const HELP = `usage: ${SYNOPSIS}
  report   predictions and rows per client per UTC day, with a total: a table, or JSON with --json
  --client ID          only this client
  --day YYYY-MM-DD     only this UTC day
environment: DATABASE_URL (and DATABASE_SCHEMA, default public) to read the PostgreSQL ledger;
  otherwise the SQLite file PREDICTOR_DATA_DIR/usage.db (PREDICTOR_DATA_DIR default .data/predictor)`;

export const DEFAULT_PREDICTOR_DATA_DIR = '.data/predictor';
export const USAGE_DB_FILE = 'usage.db';

export interface CliOutput {
  stdout(text: string): void;
  stderr(text: string): void;
}

/** Bad arguments: one line on stderr and exit status 2. */
class UsageError extends Error {
  override name = 'UsageError';
}

/** Runs the command; resolves to the exit status. `env` is read here and nowhere below. */
export async function runUsageCli(argv: readonly string[], env: Env, output: CliOutput): Promise<number> {
  let command: ReportCommand | 'help';
  try {
    command = parseCommand(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    output.stderr(`usage: ${error.message}; try: ${SYNOPSIS}\n`);
    return 2;
  }
  if (command === 'help') {
    output.stdout(`${HELP}\n`);
    return 0;
  }

  let source: LedgerSource;
  try {
    source = ledgerSource(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    output.stderr(`usage: ${error.message}\n`);
    return 2;
  }

  let ledger: UsageLedger;
  try {
    ledger = await openLedger(source);
  } catch (error) {
    output.stderr(`usage: ${describeOpenFailure(source, error)}\n`);
    return 1;
  }
  try {
    const report = usageReport(await ledger.report(command.filter), command.filter);
    output.stdout(command.json ? `${JSON.stringify(report, null, 2)}\n` : formatUsageTable(report));
    return 0;
  } catch (error) {
    output.stderr(`usage: cannot read the usage ledger (${describeSource(source)}): ${(error as Error).message}\n`);
    return 1;
  } finally {
    await ledger.close();
  }
}

interface ReportCommand {
  filter: UsageFilter;
  json: boolean;
}

function parseCommand(argv: readonly string[]): ReportCommand | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: { client: { type: 'string' }, day: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (error) {
    // Node's message goes on about `--` for positionals; its first sentence is the point.
    throw new UsageError(((error as Error).message.split(/\.\s/)[0] ?? 'bad arguments').replace(/\.$/, ''));
  }
  const { values, positionals } = parsed;
  if (values.help) return 'help';
  const [name, ...rest] = positionals;
  if (name === undefined) throw new UsageError('missing command');
  if (name !== 'report') throw new UsageError(`unknown command ${JSON.stringify(name)}`);
  if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}`);
  if (values.client === '') throw new UsageError('--client must not be empty');
  if (values.day !== undefined && !isUsageDay(values.day)) throw new UsageError(`--day must be a UTC date written YYYY-MM-DD, got ${JSON.stringify(values.day)}`);
  return {
    filter: { ...(values.client !== undefined ? { clientId: values.client } : {}), ...(values.day !== undefined ? { day: values.day } : {}) },
    json: values.json ?? false,
  };
}

type LedgerSource = { engine: 'postgres'; connectionString: string; schema: string } | { engine: 'sqlite'; path: string };

function ledgerSource(env: Env): LedgerSource {
  const read = new EnvReader(env);
  const connectionString = read.serviceUrl('DATABASE_URL', ['postgres:', 'postgresql:']);
  if (connectionString !== undefined) return { engine: 'postgres', connectionString, schema: read.identifier('DATABASE_SCHEMA', 'public') };
  return { engine: 'sqlite', path: join(read.string('PREDICTOR_DATA_DIR', DEFAULT_PREDICTOR_DATA_DIR), USAGE_DB_FILE) };
}

async function openLedger(source: LedgerSource): Promise<UsageLedger> {
  if (source.engine === 'postgres') return PostgresUsageLedger.open({ connectionString: source.connectionString, schema: source.schema, pool: { max: 1 } });
  // create: false: a report never leaves an empty ledger file behind where none was.
  return SqliteUsageLedger.open(source.path, { create: false });
}

function describeOpenFailure(source: LedgerSource, error: unknown): string {
  if (error instanceof UsageLedgerNotFound) {
    return `no usage ledger at ${resolve(error.path)} yet: the predictor creates it when it starts (run \`npm start\` or \`npm run demo\`), or set DATABASE_URL to read the PostgreSQL ledger`;
  }
  // PostgresUsageLedger's messages name the database without its password.
  return `cannot open the usage ledger (${describeSource(source)}): ${(error as Error).message}`;
}

function describeSource(source: LedgerSource): string {
  return source.engine === 'postgres' ? `PostgreSQL schema ${source.schema}` : resolve(source.path);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runUsageCli(process.argv.slice(2), process.env, { stdout: (text) => process.stdout.write(text), stderr: (text) => process.stderr.write(text) }).then(
    (code) => (process.exitCode = code),
    (error: unknown) => {
      process.stderr.write(`usage: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
