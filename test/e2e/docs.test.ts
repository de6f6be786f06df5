import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

/**
 * The documentation (README.md and docs/*.md) cannot rot: every command it shows is checked here.
 *
 * The approach. Most documented commands need running servers, Docker, Redis or minutes of load
 * (`npm start`, `docker compose up`, `npm run bench`), so running them all is not possible in a
 * test; what goes stale in practice is a *name*: a renamed npm script, CLI command, option or
 * scenario, a variable the code no longer reads, a page or heading that moved. So:
 *
 * - every line of every ```sh block is parsed (continuations joined, comments dropped, split at
 *   `&&` and `|`, leading `NAME=value` assignments dropped), and each command must be one this test
 *   knows how to check, or it fails: a new kind of command needs a checker here;
 * - `npm run <script>`, `npm start`, `npm test` (also with `-w <workspace>`): the script exists in
 *   that package.json;
 * - `npx caller <command> [options]`, `npm run -s admin -- <command> [options]`,
 *   `npm run -s scenario -- <name> [options]`, `npm run usage -- <command>`: the command, scenario
 *   and every `--option` appear in the CLI's own `--help` (or `--list`) output, which this test
 *   gets by running the CLIs exactly as documented; so `npx caller --help`,
 *   `npm run -s admin -- --help`, `npm run -s scenario -- --list` and `npm run -s usage -- --help`
 *   actually run, and must exit 0. The API-key and bench CLIs have no help: their commands and
 *   options are looked up in their sources' command tables (`case 'create'`, parseArgs options);
 * - `node dist/<name>.js`: `<name>` is an entry of scripts/build-entries.mjs;
 * - `docker compose …`: every service and profile named exists in docker-compose.yml;
 * - `curl` and `jq` are left alone (they talk to a running server);
 * - the variables of docs/configuration.md (the first column of its tables and the usage-ledger
 *   paragraph) are each read somewhere in the code, and every variable the config readers
 *   (`*\/src/config.ts`) read with the EnvReader is documented there;
 * - every relative link (and image) between README.md and docs/*.md resolves to an existing file
 *   and, for a `#fragment` into a Markdown page, to a heading of that page (GitHub's slugs).
 *
 * The demo (`npm run demo`) and `npm test` themselves are run by test/e2e/commands.test.ts and CI.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const root = (...parts: string[]) => join(ROOT, ...parts);
const PAGES = ['README.md', ...readdirSync(root('docs')).filter((name) => name.endsWith('.md')).sort().map((name) => `docs/${name}`)];
const text = (page: string) => readFileSync(root(page), 'utf8');

// ---------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------

interface Command {
  page: string;
  line: number;
  words: string[];
  source: string;
}

/** Splits a shell line into words, keeping quoted strings whole (quotes removed). */
function shellWords(line: string): string[] {
  const words: string[] = [];
  for (const match of line.matchAll(/'([^']*)'|"((?:[^"\\]|\\.)*)"|(\S+)/g)) words.push(match[1] ?? match[2] ?? match[3]!);
  return words;
}

/** Removes a trailing `# comment` outside quotes. */
function stripComment(line: string): string {
  let quote: string | undefined;
  for (let index = 0; index < line.length; index++) {
    const char = line[index]!;
    if (quote) {
      if (char === quote) quote = undefined;
    } else if (char === "'" || char === '"') quote = char;
    else if (char === '#' && (index === 0 || /\s/.test(line[index - 1]!))) return line.slice(0, index);
  }
  return line;
}

/** The commands of every ```sh block of a page. */
function commandsOf(page: string): Command[] {
  const commands: Command[] = [];
  const lines = text(page).split('\n');
  let inShell = false;
  let inFence = false;
  let pending = '';
  let pendingLine = 0;
  lines.forEach((raw, index) => {
    const fence = /^\s*```(\w*)/.exec(raw);
    if (fence) {
      if (!inFence) inShell = ['sh', 'bash', 'shell', 'console'].includes(fence[1]!);
      inFence = !inFence;
      if (!inFence) inShell = false;
      return;
    }
    if (!inShell) return;
    const line = stripComment(raw).trimEnd();
    if (!pending) pendingLine = index + 1;
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' ';
      return;
    }
    const whole = (pending + line).trim();
    pending = '';
    if (!whole) return;
    for (const part of whole.split(/\s&&\s|\s\|\s/)) {
      const words = shellWords(part.trim());
      while (words.length > 0 && /^[A-Z_][A-Z0-9_]*=/.test(words[0]!)) words.shift();
      if (words.length > 0) commands.push({ page, line: pendingLine, words, source: part.trim() });
    }
  });
  return commands;
}

/** GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces to `-`, duplicates numbered. */
function anchorsOf(page: string): Set<string> {
  const anchors = new Set<string>();
  const counts = new Map<string, number>();
  let inFence = false;
  for (const line of text(page).split('\n')) {
    if (/^\s*```/.test(line)) inFence = !inFence;
    const heading = inFence ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!heading) continue;
    const base = heading[1]!
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/ /g, '-');
    const count = counts.get(base) ?? 0;
    counts.set(base, count + 1);
    anchors.add(count === 0 ? base : `${base}-${count}`);
  }
  return anchors;
}

/** Links and images outside code: `[label](target)`. */
function linksOf(page: string): { target: string; line: number }[] {
  const links: { target: string; line: number }[] = [];
  let inFence = false;
  text(page)
    .split('\n')
    .forEach((line, index) => {
      if (/^\s*```/.test(line)) inFence = !inFence;
      if (inFence) return;
      const prose = line.replace(/`[^`]*`/g, '``');
      for (const match of prose.matchAll(/!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) links.push({ target: match[1]!, line: index + 1 });
    });
  return links;
}

// ---------------------------------------------------------------------------
// What the commands may name
// ---------------------------------------------------------------------------

const run = (command: string, args: string[]) => execFileSync(command, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });

const packageJson = (dir: string) => JSON.parse(readFileSync(root(dir, 'package.json'), 'utf8')) as { name: string; scripts?: Record<string, string>; workspaces?: string[] };
const rootPackage = packageJson('.');
/** Workspace by its folder or its package name → its scripts. */
const workspaceScripts = new Map<string, Record<string, string>>();
for (const folder of rootPackage.workspaces ?? []) {
  const workspace = packageJson(folder);
  workspaceScripts.set(folder, workspace.scripts ?? {});
  workspaceScripts.set(workspace.name, workspace.scripts ?? {});
}

/** The help texts, from the CLIs run as documented (so these cheap commands are run by this test). */
const help = new Map<string, string>();
function helpOf(key: string, command: string, args: string[]): string {
  if (!help.has(key)) help.set(key, run(command, args));
  return help.get(key)!;
}
const callerHelp = (command?: string) => helpOf(`caller ${command ?? ''}`, 'npx', ['caller', ...(command ? [command] : []), '--help']);
const adminHelp = (command?: string) => helpOf(`admin ${command ?? ''}`, 'npm', ['run', '-s', 'admin', '--', ...(command ? command.split(' ') : []), '--help']);
const scenarioList = () => helpOf('scenario --list', 'npm', ['run', '-s', 'scenario', '--', '--list']);
const scenarioHelp = () => helpOf('scenario --help', 'npm', ['run', '-s', 'scenario', '--', '--help']);
const usageHelp = () => helpOf('usage --help', 'npm', ['run', '-s', 'usage', '--', '--help']);

const options = (words: string[]) => words.filter((word) => /^--?[a-z]/.test(word) && word !== '--').map((word) => word.split('=')[0]!);
const positionals = (words: string[]) => words.filter((word) => !word.startsWith('-'));
const mentions = (haystack: string, option: string) => new RegExp(String.raw`(^|[\s,\[])${option.replace(/[-]/g, '\\-')}\b`, 'm').test(haystack);

function checkOptions(where: string, words: string[], haystack: string): string[] {
  return options(words)
    .filter((option) => !['--help', '-h', '-s'].includes(option))
    .filter((option) => !mentions(haystack, option))
    .map((option) => `${where}: ${option} is not an option it knows`);
}

const compose = parseYaml(readFileSync(root('docker-compose.yml'), 'utf8')) as { services: Record<string, { profiles?: string[] }> };
const composeServices = new Set(Object.keys(compose.services));
const composeProfiles = new Set(Object.values(compose.services).flatMap((service) => service.profiles ?? []));
const buildEntries = new Set([...readFileSync(root('scripts/build-entries.mjs'), 'utf8').matchAll(/name:\s*'([^']+)'/g)].map((match) => match[1]!));

/** Checks one command; returns what is wrong with it (empty: fine). */
function problemsOf(command: Command): string[] {
  const where = `${command.page}:${command.line} \`${command.source}\``;
  const [program, ...rest] = command.words;
  switch (program) {
    case 'npm':
      return npmProblems(where, rest);
    case 'npx':
      if (rest[0] !== 'caller') return [`${where}: npx of something other than caller`];
      return callerProblems(where, rest.slice(1));
    case 'node': {
      const entry = /^dist\/([\w-]+)\.js$/.exec(rest[0] ?? '');
      return entry && buildEntries.has(entry[1]!) ? [] : [`${where}: not a bundle scripts/build-entries.mjs makes`];
    }
    case 'docker':
      return composeProblems(where, rest);
    case 'curl':
    case 'jq':
      return [];
    default:
      return [`${where}: a command this test does not know how to check; add a checker to test/e2e/docs.test.ts`];
  }
}

function npmProblems(where: string, args: string[]): string[] {
  const workspaceIndex = args.indexOf('-w');
  const workspace = workspaceIndex >= 0 ? args[workspaceIndex + 1] : undefined;
  const words = workspaceIndex >= 0 ? [...args.slice(0, workspaceIndex), ...args.slice(workspaceIndex + 2)] : args;
  const [verb, ...afterVerb] = words;
  if (verb === 'ci' || verb === 'install') return [];
  const scripts = workspace ? workspaceScripts.get(workspace) : rootPackage.scripts;
  if (!scripts) return [`${where}: no workspace ${workspace}`];
  let script: string | undefined;
  let scriptArgs: string[] = [];
  if (verb === 'start' || verb === 'test') {
    script = verb;
    scriptArgs = afterVerb[0] === '--' ? afterVerb.slice(1) : afterVerb;
  } else if (verb === 'run') {
    const rest = afterVerb.filter((word) => word !== '-s');
    script = rest[0];
    const separator = rest.indexOf('--');
    scriptArgs = separator >= 0 ? rest.slice(separator + 1) : [];
  } else return [`${where}: npm ${verb} is not checked`];
  if (!script || !(script in scripts)) return [`${where}: no script "${script}" in ${workspace ?? 'the root'} package.json`];
  if (workspace) return [];
  switch (script) {
    case 'admin': {
      if (scriptArgs.length === 0 || scriptArgs[0] === '--help') return checkOptions(where, scriptArgs, adminHelp());
      const [group, name] = positionals(scriptArgs);
      const command = group === 'stats' ? 'stats' : `${group} ${name}`;
      if (!new RegExp(String.raw`^\s+${command}\s`, 'm').test(adminHelp())) return [`${where}: admin has no command "${command}"`];
      return checkOptions(where, scriptArgs, adminHelp(command));
    }
    case 'scenario': {
      const names = new Set([...scenarioList().matchAll(/^(\S+)\s/gm)].map((match) => match[1]!));
      const problems = positionals(scriptArgs)
        .slice(0, 1)
        .filter((name) => name !== 'all' && !names.has(name))
        .map((name) => `${where}: no scenario "${name}" (npm run -s scenario -- --list)`);
      return [...problems, ...checkOptions(where, scriptArgs.filter((word) => word !== '--list'), scenarioHelp())];
    }
    case 'usage': {
      const [command] = positionals(scriptArgs);
      const problems = command && !new RegExp(String.raw`^\s+${command}\s`, 'm').test(usageHelp()) ? [`${where}: the usage CLI has no command "${command}"`] : [];
      return [...problems, ...checkOptions(where, scriptArgs, usageHelp())];
    }
    case 'apikey': {
      // No --help: the commands are the cases of its switch, the options its parseArgs table.
      const source = readFileSync(root('predictor/src/apikey-cli.ts'), 'utf8');
      const [command] = positionals(scriptArgs);
      const problems = command && !source.includes(`case '${command}'`) ? [`${where}: the apikey CLI has no command "${command}"`] : [];
      const unknown = options(scriptArgs).filter((option) => !new RegExp(String.raw`['\s]${option.slice(2)}'?\s*:\s*\{`).test(source));
      return [...problems, ...unknown.map((option) => `${where}: the apikey CLI has no option ${option}`)];
    }
    case 'bench': {
      const source = readFileSync(root('bench/src/bench.ts'), 'utf8');
      return options(scriptArgs)
        .filter((option) => !new RegExp(String.raw`['\s]${option.slice(2)}'?\s*:\s*\{\s*type`).test(source))
        .map((option) => `${where}: the bench has no option ${option}`);
    }
    default:
      return [];
  }
}

function callerProblems(where: string, args: string[]): string[] {
  const [command] = args;
  if (!command || command === '--help') return checkOptions(where, args, callerHelp());
  if (!new RegExp(String.raw`^\s+caller ${command}\s`, 'm').test(callerHelp())) return [`${where}: caller has no command "${command}"`];
  return checkOptions(where, args, callerHelp(command));
}

function composeProblems(where: string, args: string[]): string[] {
  if (args[0] !== 'compose') return [`${where}: docker without compose is not checked`];
  const problems: string[] = [];
  const words = args.slice(1);
  for (let index = 0; index < words.length; index++) {
    const word = words[index]!;
    const next = words[index + 1];
    if (word === '--profile' && next && !composeProfiles.has(next)) problems.push(`${where}: no profile "${next}" in docker-compose.yml`);
    if (word === '--exit-code-from' && next && !composeServices.has(next)) problems.push(`${where}: no service "${next}"`);
  }
  const verbIndex = words.findIndex((word) => ['up', 'down', 'exec', 'run', 'config', 'build', 'logs'].includes(word));
  if (verbIndex < 0) return [...problems, `${where}: no docker compose subcommand this test knows`];
  const verb = words[verbIndex]!;
  const after = words.slice(verbIndex + 1);
  if (verb === 'up' || verb === 'build' || verb === 'logs') {
    const withValue = new Set(['--exit-code-from', '--scale', '--timeout', '-t']);
    const services = after.filter((word, index) => !word.startsWith('-') && !withValue.has(after[index - 1] ?? ''));
    for (const service of services) if (!composeServices.has(service)) problems.push(`${where}: no service "${service}" in docker-compose.yml`);
  }
  if (verb === 'exec' || verb === 'run') {
    const service = after.find((word) => !word.startsWith('-'));
    if (!service || !composeServices.has(service)) problems.push(`${where}: no service "${service}" in docker-compose.yml`);
    const entry = /^dist\/([\w-]+)\.js$/.exec(after[after.indexOf(service!) + 2] ?? '');
    if (after[after.indexOf(service!) + 1] === 'node' && !(entry && buildEntries.has(entry[1]!))) problems.push(`${where}: not a bundle the build makes`);
  }
  return problems;
}

// ---------------------------------------------------------------------------
// Variables
// ---------------------------------------------------------------------------

const sourceFiles = (dir: string): string[] =>
  readdirSync(root(dir)).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(root(path)).isDirectory()) return name === 'node_modules' || name === 'testing' ? [] : sourceFiles(path);
    return name.endsWith('.ts') && !name.endsWith('.test.ts') ? [path] : [];
  });
const CODE = ['common/src', 'auth-server/src', 'predictor/src', 'usage/src', 'caller/src'].flatMap(sourceFiles);
const CONFIG_READERS = ['auth-server/src/config.ts', 'predictor/src/config.ts', 'usage/src/config.ts', 'caller/src/config.ts'];

/** Whether the code names a variable: read.x('NAME'), env['NAME'], env.NAME, secretVariable: 'NAME', or the name as a string. */
const codeText = CODE.map((file) => readFileSync(root(file), 'utf8')).join('\n');
const readByCode = (variable: string) => new RegExp(String.raw`(['"\x60])${variable}\1|\benv\.${variable}\b`).test(codeText);

/** The variables docs/configuration.md documents: its tables' first column and the usage-ledger paragraph. */
function documentedVariables(): Set<string> {
  const names = new Set<string>();
  const lines = text('docs/configuration.md').split('\n');
  for (const line of lines) {
    const cell = /^\|\s*([^|]+?)\s*\|/.exec(line);
    if (cell) for (const match of cell[1]!.matchAll(/`([A-Z][A-Z0-9_]*)`/g)) names.add(match[1]!);
  }
  const ledger = text('docs/configuration.md').split(/\n\n/).find((paragraph) => paragraph.startsWith('**usage-ledger**'));
  assert.ok(ledger, 'docs/configuration.md has the **usage-ledger** paragraph');
  for (const match of ledger.matchAll(/`([A-Z][A-Z0-9_]{2,})`/g)) names.add(match[1]!);
  return names;
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

describe('the documentation', () => {
  const commands = PAGES.flatMap(commandsOf);

  it('has commands to check on every page that shows any, and the README shows the two quick-start commands', () => {
    assert.ok(commands.length > 40, `only ${commands.length} commands found; is the \`\`\`sh parsing broken?`);
    const readme = text('README.md');
    assert.match(readme, /^npm ci && npm run demo\b/m);
    assert.match(readme, /^npm ci && npm test\b/m);
  });

  it('names only npm scripts, CLI commands, options, scenarios, bundles and compose services that exist', () => {
    const problems = commands.flatMap(problemsOf);
    assert.deepEqual(problems, []);
  });

  it('ran the cheap commands it shows: the CLIs’ help and the scenario list (each exits 0)', () => {
    // execFileSync throws on a non-zero exit, so getting the text is the check.
    assert.match(callerHelp(), /^usage: caller /m);
    assert.match(adminHelp(), /^usage: admin /m);
    assert.match(scenarioList(), /^signing-key-rotation\s/m);
    assert.match(usageHelp(), /^usage: npm run usage/m);
    for (const shown of ['npx caller --help', 'npm run -s admin -- --help', 'npm run -s scenario -- --list']) {
      assert.ok(
        commands.some((command) => command.source.startsWith(shown) || command.source.startsWith(shown.replace('npx caller --help', 'npx caller predict --help'))),
        `the docs show \`${shown}\``,
      );
    }
  });

  it('documents in docs/configuration.md exactly the variables the code reads', () => {
    const documented = documentedVariables();
    const unread = [...documented].filter((variable) => !readByCode(variable));
    assert.deepEqual(unread, [], 'variables docs/configuration.md documents that no code reads');
    const undocumented = CONFIG_READERS.flatMap((file) =>
      [...readFileSync(root(file), 'utf8').matchAll(/\bread\.\w+\(\s*'([A-Z][A-Z0-9_]*)'/g)].map((match) => match[1]!).filter((variable) => !documented.has(variable)).map((variable) => `${file}: ${variable}`),
    );
    assert.deepEqual(undocumented, [], 'variables a config reader reads that docs/configuration.md does not document');
  });

  it('links only to files and headings that exist', () => {
    const broken: string[] = [];
    for (const page of PAGES) {
      for (const { target, line } of linksOf(page)) {
        if (/^[a-z]+:/i.test(target)) continue;
        const [path, fragment] = target.split('#') as [string, string | undefined];
        const file = path ? resolve(dirname(root(page)), path) : root(page);
        if (!existsSync(file)) {
          broken.push(`${page}:${line} ${target}: no file ${relative(ROOT, file)}`);
          continue;
        }
        if (fragment && file.endsWith('.md') && !anchorsOf(relative(ROOT, file)).has(fragment)) broken.push(`${page}:${line} ${target}: no heading #${fragment} in ${relative(ROOT, file)}`);
      }
    }
    assert.deepEqual(broken, []);
  });

  it('gives every docs page a title, a one-line summary, and a link from the README', () => {
    const readme = text('README.md');
    for (const page of PAGES.filter((name) => name.startsWith('docs/'))) {
      const [title, blank, summary] = text(page).split('\n');
      assert.match(title!, /^# \S/, `${page} starts with a title`);
      assert.equal(blank, '', `${page}: a blank line after the title`);
      assert.match(summary!, /^[^#|`\s-]/, `${page}: a one-line summary under the title`);
      assert.ok(readme.includes(`](${page})`), `README.md links to ${page}`);
    }
  });
});
