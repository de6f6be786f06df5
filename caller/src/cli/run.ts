import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { ConfigError, type Env } from '@m2m/common';
import { PredictorApiError, PredictorUnreachableError } from '../client/errors.js';
import { PredictorClient, type IrisRow } from '../client/predictor-client.js';
import { loadCallerConfig } from '../config.js';
import { TokenRequestError } from '../tokens/token-errors.js';
import { TokenSource } from '../tokens/token-source.js';
import { withDevDefaults } from './dev-env.js';
import { ExitCode } from './exit-codes.js';

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Reads standard input (for `predict -`). */
  readStdin: () => Promise<string>;
  env: Env;
  cwd: string;
}

const USAGE = `usage: caller <command> [options]

commands:
  token [--raw]                  fetch a token and print its decoded header and claims
                                 (--raw prints the token itself)
  predict <json | @file | ->     one prediction; the input is {"inputs": [[f1,f2,f3,f4], ...]}
                                 or just the array of rows
      --idempotency-key <key>    reuse a key to retry a logical prediction safely

environment: ISSUER, PREDICTOR_URL, CLIENT_ID, CLIENT_SECRET or CLIENT_SECRET_FILE, SCOPE,
PREDICTOR_AUDIENCE, ALLOW_INSECURE_HTTP. Without CLIENT_ID (and outside production) the
demo-caller credentials of dev.env are used.

exit codes: 0 ok, 2 configuration, 3 authentication, 4 authorisation (403),
5 invalid request, 6 retries exhausted / rate limited, 7 unreachable`;

/** Runs one CLI invocation and returns its exit code; results go to stdout, diagnostics to stderr. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        raw: { type: 'boolean', default: false },
        'idempotency-key': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    io.stderr(`caller: ${(error as Error).message}\n\n${USAGE}\n`);
    return ExitCode.configuration;
  }
  const [command, ...rest] = parsed.positionals;
  if (parsed.values.help || command === undefined || command === 'help') {
    (command === undefined && !parsed.values.help ? io.stderr : io.stdout)(`${USAGE}\n`);
    return command === undefined && !parsed.values.help ? ExitCode.configuration : ExitCode.ok;
  }

  try {
    const { env, note } = withDevDefaults(io.env, io.cwd);
    if (note) io.stderr(`caller: ${note}\n`);
    const config = loadCallerConfig(env);
    const tokens = new TokenSource({
      issuer: config.issuer,
      clientId: config.clientId,
      clientSecret: config.clientSecret,
      scope: config.scope,
      resource: config.resource,
      allowInsecureHttp: config.allowInsecureHttp,
    });
    switch (command) {
      case 'token': {
        const token = await tokens.getToken();
        io.stdout(parsed.values.raw ? `${token.value}\n` : `${JSON.stringify({ header: decodeProtectedHeader(token.value), claims: decodeJwt(token.value) }, null, 2)}\n`);
        return ExitCode.ok;
      }
      case 'predict': {
        const inputs = parseInputs(await readInputArgument(rest[0], io));
        const client = new PredictorClient({ baseUrl: config.predictorUrl, tokens });
        const idempotencyKey = parsed.values['idempotency-key'];
        const result = await client.predict(inputs, idempotencyKey === undefined ? {} : { idempotencyKey });
        io.stdout(`${JSON.stringify(result, null, 2)}\n`);
        return ExitCode.ok;
      }
      default:
        io.stderr(`caller: unknown command "${command}"\n\n${USAGE}\n`);
        return ExitCode.configuration;
    }
  } catch (error) {
    return reportFailure(error, io);
  }
}

class InputError extends Error {}

async function readInputArgument(argument: string | undefined, io: CliIo): Promise<string> {
  if (argument === undefined) throw new InputError('predict needs an input: a JSON string, @file or - for stdin');
  if (argument === '-') return io.readStdin();
  if (argument.startsWith('@')) {
    try {
      return await readFile(argument.slice(1), 'utf8');
    } catch (error) {
      throw new InputError(`cannot read ${argument.slice(1)}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
  }
  return argument;
}

/** Accepts `{"inputs": rows}` or the rows alone; the predictor validates the numbers. */
function parseInputs(text: string): IrisRow[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InputError('the input is not valid JSON');
  }
  const rows = Array.isArray(value) ? value : (value as { inputs?: unknown } | null)?.inputs;
  if (!Array.isArray(rows)) throw new InputError('the input must be {"inputs": [[f1,f2,f3,f4], ...]} or an array of rows');
  return rows as IrisRow[];
}

function reportFailure(error: unknown, io: CliIo): number {
  const fail = (code: number, message: string) => {
    io.stderr(`caller: ${message}\n`);
    return code;
  };
  if (error instanceof ConfigError) return fail(ExitCode.configuration, error.message);
  if (error instanceof InputError) return fail(ExitCode.invalidRequest, error.message);
  if (error instanceof TokenRequestError) {
    if (error.code === 'network_error') return fail(ExitCode.unreachable, error.message);
    if (error.code === 'insecure_transport') return fail(ExitCode.configuration, error.message);
    if (error.code === 'invalid_scope' || error.code === 'unauthorized_client') return fail(ExitCode.authorization, error.message);
    if (error.retryable) return fail(ExitCode.retriesExhausted, error.message);
    return fail(ExitCode.authentication, error.message);
  }
  if (error instanceof PredictorApiError) {
    const detail = error.problem?.detail ? ` (${error.problem.detail})` : '';
    const message = `${error.message}${detail && !error.message.includes(error.problem?.detail ?? '\0') ? detail : ''}`;
    if (error.status === 401) return fail(ExitCode.authentication, message);
    if (error.status === 403) return fail(ExitCode.authorization, message);
    if ([400, 413, 415, 422].includes(error.status)) return fail(ExitCode.invalidRequest, message);
    if (error.status === 429 || error.status >= 500 || error.status === 409) return fail(ExitCode.retriesExhausted, message);
    return fail(ExitCode.unexpected, message);
  }
  if (error instanceof PredictorUnreachableError) return fail(ExitCode.unreachable, error.message);
  return fail(ExitCode.unexpected, `unexpected error: ${(error as Error)?.stack ?? String(error)}`);
}
