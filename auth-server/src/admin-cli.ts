import { existsSync, readFileSync } from 'node:fs';
import { open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, parseEnv } from 'node:util';
import { ConfigError, EnvReader } from '@m2m/common';
import { AdminClient, AdminRequestError, type AdminFailure } from './admin/admin-client.js';

/**
 * The admin CLI: one command of the admin API per run. Its stdout is only the result
 * (one JSON document, or the help asked for), so `npm run -s admin -- … | jq` works;
 * messages go to stderr. Exit codes (docs/auth-server.md):
 */
const ExitCode = {
  ok: 0,
  /** The admin API failed (5xx) or something unexpected happened. */
  failed: 1,
  /** An unknown command or option, a missing or malformed argument, an invalid ADMIN_URL. */
  usage: 2,
  /** No ADMIN_TOKEN, or the admin API refused it (401/403). */
  unauthorized: 3,
  /** No such client or key (404). */
  notFound: 4,
  /** The admin API refused the change as conflicting (409): the client exists, a key rotation too early, a concurrent change. */
  conflict: 5,
  /** The admin API refused the values (400): an unknown scope, a malformed plan name or JWKS… */
  rejected: 6,
  /** The admin API did not answer at ADMIN_URL. */
  unreachable: 7,
} as const;

const EXIT_FOR: Record<AdminFailure, number> = {
  failed: ExitCode.failed,
  unauthorized: ExitCode.unauthorized,
  not_found: ExitCode.notFound,
  conflict: ExitCode.conflict,
  rejected: ExitCode.rejected,
  unreachable: ExitCode.unreachable,
};

const HINT_FOR: Partial<Record<AdminFailure, string>> = {
  unauthorized: 'check ADMIN_TOKEN',
  unreachable: 'is the auth-server running, and ADMIN_URL its admin port?',
};

/** A command line this CLI cannot run as written; the message is one line and names the fix. */
class UsageError extends Error {
  override name = 'UsageError';
}

const OPTIONS = {
  force: { type: 'boolean', value: '', help: 'rotate even before next has been published for KEY_PROPAGATION_SECONDS' },
  scopes: { type: 'string', value: '<a,b>', help: 'the scopes the client may ask for: predict, models:read' },
  plan: { type: 'string', value: '<plan>', help: "the client's plan (its limits)" },
  'auth-method': { type: 'string', value: '<method>', help: 'client_secret_basic (default), client_secret_post or private_key_jwt' },
  jwks: { type: 'string', value: '<file>', help: 'the public JWKS of a private_key_jwt client' },
  'dpop-bound': { type: 'boolean', value: '', help: 'refuse its token requests without a DPoP proof: every token is bound to its key (RFC 9449)' },
  overlap: { type: 'string', value: '<seconds>', help: 'how long the previous secret keeps working (default 300)', pattern: /^\d+$/, expected: 'a whole number of seconds' },
  'secret-file': { type: 'string', value: '<path>', help: 'write the new secret there (mode 0600) instead of into the JSON on stdout' },
} as const;

type OptionName = keyof typeof OPTIONS;
type Options = { [name in OptionName]?: (typeof OPTIONS)[name]['type'] extends 'boolean' ? boolean : string };

interface Command {
  /** Its positional arguments, all required, e.g. `<id>`. */
  args: string[];
  options: OptionName[];
  required?: OptionName[];
  /** One line: what it does and prints. */
  summary: string;
  run(admin: AdminClient, args: string[], options: Options): Promise<unknown>;
}

const COMMANDS: Record<string, Command> = {
  'keys list': { args: [], options: [], summary: 'the signing keys and their states', run: (admin) => admin.listKeys() },
  'keys rotate': {
    args: [],
    options: ['force'],
    summary: 'next → current → previous; refused (409) until next has been published for KEY_PROPAGATION_SECONDS',
    run: (admin, _, options) => admin.rotateKeys({ force: options.force === true }),
  },
  'keys revoke': { args: ['<kid>'], options: [], summary: 'remove a key from the JWKS at once (a compromise); prints the keys', run: (admin, [kid]) => admin.revokeKey(kid!) },
  'clients list': { args: [], options: [], summary: 'the registered clients', run: (admin) => admin.listClients() },
  'clients add': {
    args: ['<id>'],
    options: ['scopes', 'plan', 'auth-method', 'jwks', 'dpop-bound', 'secret-file'],
    required: ['scopes', 'plan'],
    summary: 'register a client; prints {"client", "client_secret"} (the secret only this once)',
    run: async (admin, [id], options) => {
      const jwks = options.jwks === undefined ? undefined : await readJwks(options.jwks);
      const result = await deliverSecret(options['secret-file'], () =>
        admin.registerClient({
          client_id: id!,
          scopes: options.scopes!.split(','),
          plan: options.plan!,
          ...(options['auth-method'] ? { auth_method: options['auth-method'] } : {}),
          ...(jwks ? { jwks } : {}),
          ...(options['dpop-bound'] ? { dpop_bound_access_tokens: true } : {}),
        }),
      );
      process.stderr.write(`registered ${id}\n`);
      return result;
    },
  },
  'clients rotate-secret': {
    args: ['<id>'],
    options: ['overlap', 'secret-file'],
    summary: 'a new secret; the previous one works for --overlap seconds; prints {"client_id", "client_secret", "previous_valid_until"}',
    run: async (admin, [id], options) => {
      const result = await deliverSecret(options['secret-file'], () => admin.rotateClientSecret(id!, Number(options.overlap ?? 300)));
      process.stderr.write(`rotated the secret of ${id}; the previous one works until ${result.previous_valid_until}\n`);
      return { client_id: id, ...result };
    },
  },
  'clients retire-secret': { args: ['<id>'], options: [], summary: 'end the overlap: only the newest secret works', run: (admin, [id]) => admin.retirePreviousSecret(id!) },
  'clients set-scopes': { args: ['<id>', '<a,b>'], options: [], summary: "replace the client's scopes", run: (admin, [id, scopes]) => admin.updateClient(id!, { scopes: scopes!.split(',') }) },
  'clients set-plan': { args: ['<id>', '<plan>'], options: [], summary: "change the client's plan", run: (admin, [id, plan]) => admin.updateClient(id!, { plan: plan! }) },
  'clients set-jwks': {
    args: ['<id>', '<public-jwks.json>'],
    options: [],
    summary: "replace a private_key_jwt client's public keys (rotate them)",
    run: async (admin, [id, file]) => admin.updateClient(id!, { jwks: await readJwks(file!) }),
  },
  'clients set-dpop': {
    args: ['<id>', '<required|optional>'],
    options: [],
    summary: 'required: token requests without a DPoP proof are refused; optional: Bearer tokens too',
    run: (admin, [id, mode]) => {
      if (mode !== 'required' && mode !== 'optional') throw new UsageError(`"clients set-dpop" takes required or optional, not "${mode}" (admin clients set-dpop --help)`);
      return admin.updateClient(id!, { dpop_bound_access_tokens: mode === 'required' });
    },
  },
  'clients disable': { args: ['<id>'], options: [], summary: 'refuse its token requests (invalid_client)', run: (admin, [id]) => admin.updateClient(id!, { disabled: true }) },
  'clients enable': { args: ['<id>'], options: [], summary: 'accept its token requests again', run: (admin, [id]) => admin.updateClient(id!, { disabled: false }) },
  stats: { args: [], options: [], summary: 'token requests, tokens issued, JWKS requests', run: (admin) => admin.stats() },
};

const AREAS = [...new Set(Object.keys(COMMANDS).map((name) => name.split(' ')[0]!))];

const synopsis = (name: string, command: Command) =>
  [
    name,
    ...command.args,
    ...command.options.map((option) => {
      const text = `--${option}${OPTIONS[option].value ? ` ${OPTIONS[option].value}` : ''}`;
      return command.required?.includes(option) ? text : `[${text}]`;
    }),
  ].join(' ');

const column = (left: string, right: string) => `  ${left.padEnd(24)} ${right}`;

function commandHelp(name: string): string {
  const command = COMMANDS[name]!;
  return [
    `usage: admin ${synopsis(name, command)}`,
    command.summary,
    ...(command.options.length > 0 ? ['', 'options:'] : []),
    ...command.options.map((option) => column(`--${option} ${OPTIONS[option].value}`.trim(), OPTIONS[option].help)),
    column('-h, --help', 'this help'),
  ].join('\n');
}

function overview(names: string[]): string {
  return names.map((name) => column(name, COMMANDS[name]!.summary)).join('\n');
}

const GLOBAL_HELP = `usage: admin <command> [arguments] [options]
  npm run -s admin -- <command> …   (-s: npm prints nothing on stdout but the result)
  node dist/admin.js <command> …    (in the container images)

commands:
${overview(Object.keys(COMMANDS))}

"admin <command> --help" shows a command's arguments and options.
stdout: the result, one JSON document (| jq works); messages go to stderr.
environment: ADMIN_URL (default http://127.0.0.1:9001), ADMIN_TOKEN (default: dev.env's, outside production)
exit codes: 0 done, 1 the admin API failed, 2 usage error, 3 not authorised (ADMIN_TOKEN),
  4 not found, 5 conflict (409), 6 rejected (400: invalid values), 7 admin API unreachable`;

function areaHelp(area: string): string {
  return `usage: admin ${area} <command> [arguments] [options]\n\ncommands:\n${overview(Object.keys(COMMANDS).filter((name) => name.startsWith(`${area} `)))}\n\n"admin ${area} <command> --help" shows a command's arguments and options.`;
}

/** The candidate closest to a mistyped word, if any is close (at most two edits, or a prefix). */
function closest(word: string, candidates: string[]): string | undefined {
  const distance = (a: string, b: string) => {
    let row = Array.from({ length: b.length + 1 }, (_, index) => index);
    for (let i = 1; i <= a.length; i += 1) {
      const next = [i];
      for (let j = 1; j <= b.length; j += 1) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      row = next;
    }
    return row[b.length]!;
  };
  const scored = candidates.map((candidate) => ({ candidate, score: candidate.startsWith(word) ? 0 : distance(word, candidate) }));
  const best = scored.sort((a, b) => a.score - b.score)[0];
  return best && best.score <= 2 ? best.candidate : undefined;
}

const didYouMean = (word: string, candidates: string[]) => {
  const suggestion = closest(word, candidates);
  return suggestion ? `did you mean "${suggestion}"? ` : '';
};

/** Help to print (on stdout if asked for, else on stderr with exit code 2), or a command to run. */
type Invocation = { help: string; asked: boolean } | { name: string; command: Command; args: string[]; options: Options };

/** Reads the command line; throws a UsageError for anything it cannot run. */
function parseCommandLine(argv: string[]): Invocation {
  const { positionals, tokens } = parseArgs({
    args: argv,
    options: { ...Object.fromEntries(Object.entries(OPTIONS).map(([name, option]) => [name, { type: option.type }])), help: { type: 'boolean', short: 'h' } },
    // Checked below against the command's own options, for one-line errors with a hint.
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const optionTokens = tokens.filter((token) => token.kind === 'option');
  const help = optionTokens.some((token) => token.name === 'help') || positionals[0] === 'help';
  const words = positionals[0] === 'help' ? positionals.slice(1) : positionals;
  const [area, verb] = words;

  if (area === undefined) return { help: GLOBAL_HELP, asked: help };
  let name: string;
  if (COMMANDS[area]) name = area;
  else if (AREAS.includes(area)) {
    const verbs = Object.keys(COMMANDS).filter((candidate) => candidate.startsWith(`${area} `)).map((candidate) => candidate.slice(area.length + 1));
    if (verb === undefined) {
      if (help) return { help: areaHelp(area), asked: true };
      throw new UsageError(`"${area}" needs a command: ${verbs.join(', ')} (admin ${area} --help)`);
    }
    if (!verbs.includes(verb)) throw new UsageError(`unknown command "${area} ${verb}"; ${didYouMean(`${area} ${verb}`, verbs.map((candidate) => `${area} ${candidate}`))}${area} has ${verbs.join(', ')} (admin ${area} --help)`);
    name = `${area} ${verb}`;
  } else {
    throw new UsageError(`unknown command "${area}"; ${didYouMean(area, [...AREAS, ...Object.keys(COMMANDS).filter((candidate) => !candidate.includes(' '))])}the commands begin with ${AREAS.join(', ')} (admin --help)`);
  }
  if (help) return { help: commandHelp(name), asked: true };

  const command = COMMANDS[name]!;
  const hint = `(admin ${name} --help)`;
  const options: Options = {};
  for (const token of optionTokens) {
    const option = token.name as OptionName;
    if (!(command.options as string[]).includes(option)) {
      const known = command.options.map((candidate) => `--${candidate}`);
      throw new UsageError(`unknown option ${token.rawName} for "${name}"; ${didYouMean(`--${token.name}`, known)}${known.length > 0 ? `its options: ${known.join(', ')}` : 'it takes no options'} ${hint}`);
    }
    if (OPTIONS[option].type === 'boolean') {
      if (token.value !== undefined) throw new UsageError(`${token.rawName} takes no value ${hint}`);
      (options as Record<string, boolean>)[option] = true;
    } else {
      if (token.value === undefined || (!token.inlineValue && token.value.startsWith('-'))) throw new UsageError(`${token.rawName} needs a value: ${token.rawName} ${OPTIONS[option].value} ${hint}`);
      const format = OPTIONS[option] as { pattern?: RegExp; expected?: string };
      if (format.pattern && !format.pattern.test(token.value)) throw new UsageError(`${token.rawName} must be ${format.expected}, not "${token.value}" ${hint}`);
      (options as Record<string, string>)[option] = token.value;
    }
  }
  const args = words.slice(name.split(' ').length);
  if (args.length < command.args.length) throw new UsageError(`"${name}" needs ${command.args.slice(args.length).join(' ')} ${hint}`);
  if (args.length > command.args.length) throw new UsageError(`"${name}" takes ${command.args.length === 0 ? 'no arguments' : command.args.join(' ')}, not also "${args.slice(command.args.length).join(' ')}" ${hint}`);
  const missing = command.required?.find((option) => options[option] === undefined);
  if (missing) throw new UsageError(`"${name}" needs --${missing} ${OPTIONS[missing].value} ${hint}`);
  return { name, command, args, options };
}

async function readJwks(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read the JWKS file ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new UsageError(`the JWKS file ${path} is not JSON`);
  }
}

/**
 * Runs a change that may create a secret. With a path the secret goes into that file
 * (mode 0600), not into the result; the file is opened before the change, so that an
 * unwritable path fails with nothing changed instead of losing a secret already issued.
 */
async function deliverSecret<T extends { client_secret?: string }>(path: string | undefined, change: () => Promise<T>): Promise<Omit<T, 'client_secret'> & { client_secret?: string; secret_file?: string }> {
  if (path === undefined) return change();
  const existed = existsSync(path);
  const file = await open(path, 'a', 0o600).catch((error: NodeJS.ErrnoException) => {
    throw new UsageError(`cannot write --secret-file ${path}: ${error.code ?? error.message}`);
  });
  try {
    const { client_secret: secret, ...rest } = await change();
    if (secret === undefined) {
      if (!existed) await unlink(path);
      return rest;
    }
    await file.truncate(0);
    await file.write(`${secret}\n`);
    await file.chmod(0o600);
    process.stderr.write(`secret written to ${path}\n`);
    return { ...rest, secret_file: path };
  } catch (error) {
    if (!existed) await unlink(path).catch(() => {});
    throw error;
  } finally {
    await file.close();
  }
}

const DEV_ENV_FILE = fileURLToPath(new URL('../../dev.env', import.meta.url));

function adminToken(read: EnvReader, env: NodeJS.ProcessEnv): string | undefined {
  const token = read.string('ADMIN_TOKEN');
  if (token) return token;
  const devEnv = [join(process.cwd(), 'dev.env'), DEV_ENV_FILE].find((path) => existsSync(path));
  if (env['NODE_ENV'] !== 'production' && devEnv) return parseEnv(readFileSync(devEnv, 'utf8'))['ADMIN_TOKEN'] || undefined;
  return undefined;
}

async function main(argv: string[]): Promise<number> {
  const invocation = parseCommandLine(argv);
  if ('help' in invocation) {
    (invocation.asked ? process.stdout : process.stderr).write(`${invocation.help}\n`);
    return invocation.asked ? ExitCode.ok : ExitCode.usage;
  }
  const read = new EnvReader(process.env);
  const url = read.url('ADMIN_URL', 'http://127.0.0.1:9001');
  const token = adminToken(read, process.env);
  if (!token) {
    process.stderr.write(`admin: ADMIN_TOKEN is not set${process.env['NODE_ENV'] === 'production' ? '' : ' and there is no dev.env'}; the admin API needs it\n`);
    return ExitCode.unauthorized;
  }
  const result = await invocation.command.run(new AdminClient(url, token), invocation.args, invocation.options);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  return ExitCode.ok;
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (error: unknown) => {
    if (error instanceof UsageError || error instanceof ConfigError) {
      process.stderr.write(`admin: ${error.message}\n`);
      process.exitCode = ExitCode.usage;
    } else if (error instanceof AdminRequestError) {
      const hint = HINT_FOR[error.failure];
      process.stderr.write(`admin: ${error.message}${hint ? ` (${hint})` : ''}\n`);
      process.exitCode = EXIT_FOR[error.failure];
    } else {
      process.stderr.write(`admin: unexpected error: ${(error as Error)?.stack ?? String(error)}\n`);
      process.exitCode = ExitCode.failed;
    }
  },
);
