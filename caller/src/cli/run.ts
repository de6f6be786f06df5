import { parseArgs, type ParseArgsConfig } from 'node:util';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { ConfigError, type Env } from '@m2m/common';
import { PredictorClient, type AttemptEvent, type IrisRow } from '../client/predictor-client.js';
import { loadCallerConfig, type CallerConfig } from '../config.js';
import { discoverAuthorizationServer } from '../discovery/resource-metadata.js';
import { systemClock } from '../retry/clock.js';
import { TokenSource } from '../tokens/token-source.js';
import { formatSummary, newBatchId, parseBatchId, runBatch } from './batch.js';
import { withDevDefaults } from './dev-env.js';
import { ExitCode } from './exit-codes.js';
import { describeFailure } from './failure.js';
import { parseBatch, parseInputs, parseJson, readInputArgument, readInputFile, type BatchLine } from './inputs.js';

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Reads standard input (for `predict -`). */
  readStdin: () => Promise<string>;
  /** Whether stderr is a terminal (progress bar) or not (plain progress lines). */
  stderrIsTty: boolean;
  env: Env;
  cwd: string;
  /**
   * Starts listening for an interrupt (SIGINT) and returns the signal it aborts; only the
   * commands that can stop cleanly call it (a batch reports what it did and how to resume).
   */
  interrupts?: () => AbortSignal;
  /** Replaces `fetch` for the predictor calls (tests). */
  fetch?: typeof fetch;
}

type OptionSpec = { type: 'string' | 'boolean'; short?: string; value?: string; help: string };

const COMMON_OPTIONS: Record<string, OptionSpec> = {
  verbose: { type: 'boolean', short: 'v', help: 'print every attempt (number, status, wait and why, replays) on stderr' },
  dpop: { type: 'boolean', help: 'bind the tokens to a key pair (DPoP, RFC 9449); same as CLIENT_DPOP=true' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};
const CALL_OPTIONS: Record<string, OptionSpec> = {
  deadline: { type: 'string', value: '<seconds>', help: 'overall time per prediction, attempts and waits included' },
  'max-attempts': { type: 'string', value: '<n>', help: 'attempts per prediction (default 5)' },
};

interface Command {
  usage: string;
  summary: string;
  /** Positional arguments: exactly this many. */
  positionals: number;
  options: Record<string, OptionSpec>;
  notes?: string;
}

const COMMANDS: Record<'token' | 'predict' | 'batch', Command> = {
  token: {
    usage: 'caller token [--raw]',
    summary: 'fetch a token and print its decoded header and claims',
    positionals: 0,
    options: { raw: { type: 'boolean', help: 'print the token itself' } },
  },
  predict: {
    usage: 'caller predict <json | @file | -> [options]',
    summary: 'one prediction; the input is {"inputs": [[f1,f2,f3,f4], ...]} or just the rows',
    positionals: 1,
    options: {
      'idempotency-key': { type: 'string', value: '<key>', help: 'reuse a key to retry a logical prediction safely (default: a new UUID)' },
      ...CALL_OPTIONS,
    },
  },
  batch: {
    usage: 'caller batch <file.jsonl> [options]',
    summary: 'one prediction per line; results as JSON lines on stdout, a summary on stderr',
    positionals: 1,
    options: {
      concurrency: { type: 'string', value: '<n>', help: 'predictions in flight (default 8)' },
      resume: { type: 'string', value: '<batch id>', help: 're-run the batch with this id: lines already done are replayed, not executed again' },
      'batch-id': { type: 'string', value: '<id>', help: 'the id to run the batch under (default: a new UUID); same as --resume' },
      ...CALL_OPTIONS,
    },
    notes: `Each line is {"inputs": [...], "idempotency_key"?: "..."} or just the rows. A line without
idempotency_key gets the key <batch id>:<line number>; the batch id is printed on stderr, so a
batch that was interrupted, stopped by the quota or had failures is re-run with --resume <id>
and executes no line twice. A used-up daily quota stops the batch at once (exit 9); SIGINT
stops it, reports the lines not attempted and exits 130.`,
  },
};

const ENVIRONMENT = `environment: ISSUER, PREDICTOR_URL, CLIENT_ID, CLIENT_SECRET or CLIENT_SECRET_FILE or
CLIENT_PRIVATE_KEY_FILE, SCOPE, PREDICTOR_AUDIENCE, ALLOW_INSECURE_HTTP, CLIENT_DPOP (true: DPoP
with a new key pair, CLIENT_DPOP_ALG, default ES256), CLIENT_DPOP_KEY_FILE (a private JWK; turns
DPoP on). Without any of CLIENT_ID and its credential (and outside production) the client is
dev.env's demo-caller, its secret from DEMO_CALLER_SECRET in the environment or from dev.env.
With PREDICTOR_URL and no ISSUER, the authorization server is read from the predictor's
/.well-known/oauth-protected-resource (RFC 9728), whose "resource" must be PREDICTOR_AUDIENCE,
or PREDICTOR_URL when that is not set.

exit codes: 0 ok, 2 usage or configuration, 3 authentication, 4 authorisation (403),
5 invalid request, 6 retries exhausted / rate limited, 7 unreachable, 8 retry budget exhausted,
9 daily quota used up, 130 interrupted`;

function optionLines(options: Record<string, OptionSpec>): string {
  return Object.entries(options)
    .map(([name, spec]) => {
      const flag = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.value ? ` ${spec.value}` : ''}`;
      return `  ${flag.padEnd(30)} ${spec.help}`;
    })
    .join('\n');
}

const USAGE = `usage: caller <command> [options]

commands:
${Object.entries(COMMANDS)
  .map(([, command]) => `  ${command.usage.padEnd(44)} ${command.summary}`)
  .join('\n')}

Run caller <command> --help for a command's options.

${ENVIRONMENT}`;

function commandHelp(name: keyof typeof COMMANDS): string {
  const command = COMMANDS[name];
  return `usage: ${command.usage}

${command.summary}

options:
${optionLines({ ...command.options, ...COMMON_OPTIONS })}
${command.notes ? `\n${command.notes}\n` : ''}
${ENVIRONMENT}`;
}

function positiveNumber(name: string, raw: string | undefined, integer: boolean): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) throw new ConfigError(`--${name} must be a positive ${integer ? 'integer' : 'number'}, got "${raw}"`);
  return value;
}

/** Levenshtein distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i += 1) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j += 1) {
      const current = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length]!;
}

function closest(name: string, candidates: string[]): string | undefined {
  const ranked = candidates.map((candidate) => ({ candidate, cost: distance(name, candidate) })).sort((a, b) => a.cost - b.cost)[0];
  return ranked && ranked.cost <= Math.max(2, Math.floor(name.length / 3)) ? ranked.candidate : undefined;
}

const toParseArgs = (options: Record<string, OptionSpec>): NonNullable<ParseArgsConfig['options']> =>
  Object.fromEntries(Object.entries(options).map(([name, spec]) => [name, { type: spec.type, ...(spec.short ? { short: spec.short } : {}) }]));

/** A mistake on the command line: one line on stderr with a hint, exit 2. */
class UsageError extends Error {}

/** Parses argv for one command; unknown options and missing values are a UsageError with a hint. */
function parseCommandLine(name: keyof typeof COMMANDS, args: string[]) {
  const specs = { ...COMMANDS[name].options, ...COMMON_OPTIONS };
  const hint = `caller ${name} --help`;
  const loose = parseArgs({ args, options: toParseArgs(specs), strict: false, allowPositionals: true, tokens: true });
  for (const token of loose.tokens) {
    if (token.kind !== 'option' || token.name in specs) continue;
    const written = token.rawName;
    const owner = Object.entries(COMMANDS).find(([, command]) => token.name in command.options)?.[0];
    if (owner) throw new UsageError(`${written} is an option of "caller ${owner}", not of "caller ${name}" (${hint})`);
    const suggestion = closest(token.name, Object.keys(specs));
    throw new UsageError(`unknown option ${written} for "caller ${name}"${suggestion ? `; did you mean --${suggestion}?` : ''} (${hint})`);
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options: toParseArgs(specs), strict: true, allowPositionals: true });
  } catch (error) {
    // node:util's messages run on with advice about "--"; the first sentence is the point.
    throw new UsageError(`${(error as Error).message.split('. ')[0]!.replace(/\.$/, '')} (${hint})`);
  }
  const positionals = parsed.positionals.slice(1);
  if (!parsed.values['help'] && positionals.length > COMMANDS[name].positionals) {
    throw new UsageError(`"caller ${name}" takes ${COMMANDS[name].positionals || 'no'} argument${COMMANDS[name].positionals === 1 ? '' : 's'}, got ${positionals.map((value) => JSON.stringify(value)).join(' ')} (${hint})`);
  }
  return { values: parsed.values as Record<string, string | boolean | undefined>, positionals };
}

/** The command: the first positional, wherever the options are (`caller -v predict …` works too). */
function findCommand(argv: string[]): string | undefined {
  const all = Object.assign({}, COMMON_OPTIONS, ...Object.values(COMMANDS).map((command) => command.options)) as Record<string, OptionSpec>;
  return parseArgs({ args: argv, options: toParseArgs(all), strict: false, allowPositionals: true }).positionals[0];
}

/** Runs one CLI invocation and returns its exit code; results go to stdout, diagnostics to stderr. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const name = findCommand(argv);
  if (name === undefined || name === 'help') {
    const topic = name === 'help' ? argv[argv.indexOf('help') + 1] : undefined;
    if (topic !== undefined && topic in COMMANDS) {
      io.stdout(`${commandHelp(topic as keyof typeof COMMANDS)}\n`);
      return ExitCode.ok;
    }
    const asked = name === 'help' || argv.includes('--help') || argv.includes('-h');
    (asked ? io.stdout : io.stderr)(`${USAGE}\n`);
    return asked ? ExitCode.ok : ExitCode.configuration;
  }
  if (!(name in COMMANDS)) {
    const suggestion = closest(name, Object.keys(COMMANDS));
    io.stderr(`caller: unknown command "${name}"${suggestion ? `; did you mean "${suggestion}"?` : ''} (caller --help)\n`);
    return ExitCode.configuration;
  }
  const command = name as keyof typeof COMMANDS;

  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseCommandLine(command, argv));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr(`caller: ${error.message}\n`);
    return ExitCode.configuration;
  }
  if (values['help']) {
    io.stdout(`${commandHelp(command)}\n`);
    return ExitCode.ok;
  }

  try {
    const string = (option: string) => values[option] as string | undefined;
    const deadlineSeconds = positiveNumber('deadline', string('deadline'), false);
    const maxAttempts = positiveNumber('max-attempts', string('max-attempts'), true);
    const callOptions = { ...(deadlineSeconds ? { deadlineMs: deadlineSeconds * 1000 } : {}), ...(maxAttempts ? { maxAttempts } : {}) };
    // Usage mistakes first: they need no configuration, and no network.
    if (COMMANDS[command].positionals > positionals.length) {
      throw new ConfigError(command === 'batch' ? 'batch needs a file of JSON lines (caller batch --help)' : 'predict needs an input: a JSON string, @file or - for stdin (caller predict --help)');
    }
    // The input too: a broken file or argument is reported before any configuration is read.
    let inputs: IrisRow[] = [];
    let batch: { file: string; lines: BatchLine[]; batchId: string; resumed: boolean; concurrency: number } | undefined;
    if (command === 'predict') {
      const input = await readInputArgument(positionals[0], io.readStdin);
      inputs = parseInputs(parseJson(input.text, input.source), input.source);
    } else if (command === 'batch') {
      const file = positionals[0]!;
      const concurrency = positiveNumber('concurrency', string('concurrency'), true) ?? 8;
      const [resume, chosen] = [string('resume'), string('batch-id')];
      if (resume !== undefined && chosen !== undefined && resume !== chosen) throw new ConfigError('--resume and --batch-id name different batches: give one');
      const batchId = parseBatchId(resume ?? chosen ?? newBatchId());
      batch = { file, lines: parseBatch(await readInputFile(file), file), batchId, resumed: resume !== undefined, concurrency };
    }
    const { env, note } = withDevDefaults(values['dpop'] ? { ...io.env, CLIENT_DPOP: 'true' } : io.env, io.cwd);
    if (note) io.stderr(`caller: ${note}\n`);
    const config = loadCallerConfig(env);
    const server = config.issuer !== undefined ? { issuer: config.issuer, resource: config.resource } : await discoverFromPredictor(config, io);
    const tokens = new TokenSource({
      issuer: server.issuer,
      clientId: config.clientId,
      clientSecret: config.clientSecret,
      clientKey: config.clientKey,
      scope: config.scope,
      resource: server.resource,
      allowInsecureHttp: config.allowInsecureHttp,
      dpop: await config.dpop?.key(),
    });
    const replays = new ReplayLog(io.fetch ?? fetch);
    const listeners: ((event: AttemptEvent) => void)[] = [];
    if (values['verbose']) listeners.push((event) => io.stderr(`${describeAttempt(event, replays)}\n`));
    const client = new PredictorClient({ baseUrl: config.predictorUrl, tokens, fetch: replays.fetch, onAttempt: (event) => listeners.forEach((listener) => listener(event)) });

    switch (command) {
      case 'token': {
        const token = await tokens.getToken();
        io.stdout(values['raw'] ? `${token.value}\n` : `${JSON.stringify({ token_type: token.tokenType, header: decodeProtectedHeader(token.value), claims: decodeJwt(token.value) }, null, 2)}\n`);
        return ExitCode.ok;
      }
      case 'predict': {
        const idempotencyKey = string('idempotency-key');
        const result = await client.predict(inputs, { ...callOptions, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) });
        io.stdout(`${JSON.stringify(result, null, 2)}\n`);
        return ExitCode.ok;
      }
      case 'batch': {
        const { file, lines, batchId, resumed, concurrency } = batch!;
        const resumeCommand = `caller batch ${quoteArgument(file)} --resume ${batchId}`;
        io.stderr(`caller: batch ${batchId}${resumed ? ' (resumed: lines already done are replayed)' : ''}, ${lines.length} lines; to re-run it without executing any line twice: --resume ${batchId}\n`);
        const signal = io.interrupts?.();
        const summary = await runBatch(
          lines,
          { client, tokenFetches: () => tokens.tokenRequests, clock: systemClock, concurrency, callOptions, batchId, wasReplayed: (key) => replays.wasReplayed(key), ...(signal ? { signal } : {}) },
          { result: io.stdout, progress: io.stderr, isTty: io.stderrIsTty },
          { subscribe: (listener) => listeners.push(listener) },
        );
        io.stderr(`${formatSummary(summary, { resume: resumeCommand, concurrency })}\n`);
        return summary.exitCode;
      }
    }
  } catch (error) {
    const { code, message } = describeFailure(error);
    io.stderr(`caller: ${message}\n`);
    return code;
  }
}

/** PREDICTOR_URL alone: the authorization server and the resource from the predictor's RFC 9728 metadata, said on stderr. */
async function discoverFromPredictor(config: CallerConfig, io: CliIo): Promise<{ issuer: string; resource: string }> {
  const discovered = await discoverAuthorizationServer({ predictorUrl: config.predictorUrl, expectedResource: config.resource, allowInsecureHttp: config.allowInsecureHttp, ...(io.fetch ? { fetch: io.fetch } : {}) });
  io.stderr(`caller: no ISSUER set: using ${discovered.issuer}, from the predictor's metadata at ${discovered.metadataUrl} (resource ${discovered.resource})\n`);
  return { issuer: discovered.issuer, resource: discovered.resource };
}

/** Quotes an argument for a shell only when it needs it. */
function quoteArgument(value: string): string {
  return /^[\w./@:+-]+$/.test(value) ? value : `'${value.replaceAll("'", `'\\''`)}'`;
}

/**
 * Remembers which idempotency keys the predictor answered as replays (`Idempotent-Replayed:
 * true`: the result of an earlier execution, not a new one), by wrapping `fetch`.
 */
class ReplayLog {
  readonly #replayed = new Set<string>();
  readonly fetch: typeof fetch;

  constructor(inner: typeof fetch) {
    this.fetch = async (input, init) => {
      const response = await inner(input, init);
      if (response.headers.get('idempotent-replayed') === 'true') {
        const key = new Headers(init?.headers).get('idempotency-key');
        if (key !== null) this.#replayed.add(key);
      }
      return response;
    };
  }

  wasReplayed(idempotencyKey: string): boolean {
    return this.#replayed.has(idempotencyKey);
  }
}

/** `attempt 2 [key 3f2a…]: 429 → retry in 2000 ms (retry-after)` */
function describeAttempt(event: AttemptEvent, replays: ReplayLog): string {
  const key = event.idempotencyKey ? ` [key ${event.idempotencyKey}]` : '';
  const answer = event.status === undefined ? `no answer (${event.error})` : String(event.status);
  const replayed = event.next === 'done' && event.idempotencyKey !== undefined && replays.wasReplayed(event.idempotencyKey);
  const next =
    event.next === 'retry'
      ? event.reason === 'dpop-nonce'
        ? "retry at once with the predictor's DPoP nonce"
        : `retry in ${Math.round(event.waitMs)} ms (${event.reason})`
      : event.next === 'refresh-token'
        ? 'refresh the token and replay'
        : event.next === 'done'
          ? replayed
            ? 'done (replayed: the result of an earlier execution with this key, not executed again)'
            : 'done'
          : `stop (${event.reason})`;
  return `attempt ${event.attempt}${key}: ${answer} → ${next}`;
}
