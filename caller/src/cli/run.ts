import { parseArgs } from 'node:util';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { ConfigError, type Env } from '@m2m/common';
import { PredictorClient, type AttemptEvent } from '../client/predictor-client.js';
import { loadCallerConfig } from '../config.js';
import { systemClock } from '../retry/clock.js';
import { TokenSource } from '../tokens/token-source.js';
import { formatSummary, runBatch } from './batch.js';
import { withDevDefaults } from './dev-env.js';
import { ExitCode } from './exit-codes.js';
import { describeFailure } from './failure.js';
import { parseBatch, parseInputs, parseJson, readInputArgument, readInputFile } from './inputs.js';

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Reads standard input (for `predict -`). */
  readStdin: () => Promise<string>;
  /** Whether stderr is a terminal (progress bar) or not (plain progress lines). */
  stderrIsTty: boolean;
  env: Env;
  cwd: string;
}

const USAGE = `usage: caller <command> [options]

commands:
  token [--raw]                  fetch a token and print its decoded header and claims
                                 (--raw prints the token itself)
  predict <json | @file | ->     one prediction; the input is {"inputs": [[f1,f2,f3,f4], ...]}
                                 or just the array of rows
  batch <file.jsonl>             one prediction per line ({"inputs": ..., "idempotency_key"?: ...}
                                 or an array of rows); results as JSON lines, summary on stderr

options:
  --idempotency-key <key>        predict: reuse a key to retry a logical prediction safely
  --concurrency <n>              batch: predictions in flight (default 8)
  --deadline <seconds>           overall time per prediction, attempts and waits included
  --max-attempts <n>             attempts per prediction (default 5)
  --verbose                      print every attempt (number, status, wait and why) on stderr

environment: ISSUER, PREDICTOR_URL, CLIENT_ID, CLIENT_SECRET or CLIENT_SECRET_FILE, SCOPE,
PREDICTOR_AUDIENCE, ALLOW_INSECURE_HTTP. Without CLIENT_ID (and outside production) the
demo-caller credentials of dev.env are used.

exit codes: 0 ok, 2 configuration, 3 authentication, 4 authorisation (403),
5 invalid request, 6 retries exhausted / rate limited, 7 unreachable`;

function positiveNumber(name: string, raw: string | undefined, integer: boolean): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) throw new ConfigError(`--${name} must be a positive ${integer ? 'integer' : 'number'}, got "${raw}"`);
  return value;
}

/** Runs one CLI invocation and returns its exit code; results go to stdout, diagnostics to stderr. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        raw: { type: 'boolean', default: false },
        verbose: { type: 'boolean', short: 'v', default: false },
        'idempotency-key': { type: 'string' },
        concurrency: { type: 'string' },
        deadline: { type: 'string' },
        'max-attempts': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    io.stderr(`caller: ${(error as Error).message}\n\n${USAGE}\n`);
    return ExitCode.configuration;
  }
  const { values } = parsed;
  const [command, ...rest] = parsed.positionals;
  if (values.help || command === 'help') {
    io.stdout(`${USAGE}\n`);
    return ExitCode.ok;
  }
  if (command === undefined) {
    io.stderr(`${USAGE}\n`);
    return ExitCode.configuration;
  }

  try {
    const deadlineSeconds = positiveNumber('deadline', values.deadline, false);
    const maxAttempts = positiveNumber('max-attempts', values['max-attempts'], true);
    const concurrency = positiveNumber('concurrency', values.concurrency, true) ?? 8;
    const callOptions = { ...(deadlineSeconds ? { deadlineMs: deadlineSeconds * 1000 } : {}), ...(maxAttempts ? { maxAttempts } : {}) };
    const { env, note } = withDevDefaults(io.env, io.cwd);
    if (note) io.stderr(`caller: ${note}\n`);
    const config = loadCallerConfig(env);
    const tokens = new TokenSource({
      issuer: config.issuer,
      clientId: config.clientId,
      clientSecret: config.clientSecret,
      clientKey: config.clientKey,
      scope: config.scope,
      resource: config.resource,
      allowInsecureHttp: config.allowInsecureHttp,
    });
    const listeners: ((event: AttemptEvent) => void)[] = [];
    if (values.verbose) listeners.push((event) => io.stderr(`${describeAttempt(event)}\n`));
    const client = new PredictorClient({ baseUrl: config.predictorUrl, tokens, onAttempt: (event) => listeners.forEach((listener) => listener(event)) });

    switch (command) {
      case 'token': {
        const token = await tokens.getToken();
        io.stdout(values.raw ? `${token.value}\n` : `${JSON.stringify({ header: decodeProtectedHeader(token.value), claims: decodeJwt(token.value) }, null, 2)}\n`);
        return ExitCode.ok;
      }
      case 'predict': {
        const inputs = parseInputs(parseJson(await readInputArgument(rest[0], io.readStdin), 'the input'));
        const idempotencyKey = values['idempotency-key'];
        const result = await client.predict(inputs, { ...callOptions, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) });
        io.stdout(`${JSON.stringify(result, null, 2)}\n`);
        return ExitCode.ok;
      }
      case 'batch': {
        if (!rest[0]) throw new ConfigError('batch needs a file of JSON lines');
        const lines = parseBatch(await readInputFile(rest[0]));
        const summary = await runBatch(
          lines,
          { client, tokenFetches: () => tokens.tokenRequests, clock: systemClock, concurrency, callOptions },
          { result: io.stdout, progress: io.stderr, isTty: io.stderrIsTty },
          { subscribe: (listener) => listeners.push(listener) },
        );
        io.stderr(`${formatSummary(summary)}\n`);
        return summary.exitCode;
      }
      default:
        io.stderr(`caller: unknown command "${command}"\n\n${USAGE}\n`);
        return ExitCode.configuration;
    }
  } catch (error) {
    const { code, message } = describeFailure(error);
    io.stderr(`caller: ${message}\n`);
    return code;
  }
}

/** `attempt 2 [key 3f2a…]: 429 → retry in 2000 ms (retry-after)` */
function describeAttempt(event: AttemptEvent): string {
  const key = event.idempotencyKey ? ` [key ${event.idempotencyKey}]` : '';
  const answer = event.status === undefined ? `no answer (${event.error})` : String(event.status);
  const next = event.next === 'retry' ? `retry in ${Math.round(event.waitMs)} ms (${event.reason})` : event.next === 'refresh-token' ? 'refresh the token and replay' : event.next === 'done' ? 'done' : `stop (${event.reason})`;
  return `attempt ${event.attempt}${key}: ${answer} → ${next}`;
}
