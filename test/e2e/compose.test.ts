import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { cp, mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { builtinModules } from 'node:module';
import { join, posix } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { parseEnv } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { DEFAULT_SHUTDOWN_GRACE_MS, SHUTDOWN_CLOSE_MARGIN_MS } from '@m2m/common';
import { REPOSITORY_ROOT } from '../src/harness/processes.js';

// No Docker engine runs on the development machine, so docker-compose.yml and the
// Dockerfiles are checked statically against the code: a renamed variable, port,
// route, path or bundle fails here instead of at `docker compose up`.

// ---------------------------------------------------------------------------
// What the compose file is checked against
// ---------------------------------------------------------------------------

interface ServiceCode {
  /** Folders whose TypeScript (tests excluded) the service's container runs. */
  sources: string[];
  /** The variable holding the port the service listens on, if it listens. */
  portVariable?: string;
  /** The variable holding the directory that must be on a named volume. */
  dataVariable?: string;
  /** Whether, with this environment, the service keeps durable state in dataVariable (default: yes). */
  keepsDataIn?: (environment: Record<string, string>) => boolean;
}

/**
 * The code each image of this repository runs, by the folder of its Dockerfile: the
 * default profile's `auth-server`, `predictor` and `caller`, and the `distributed`
 * profile's replicas (`auth-server-1` runs auth-server/Dockerfile's image, and so on)
 * and its `usage-ledger` (usage/Dockerfile's).
 */
const SERVICE_CODE: Record<string, ServiceCode> = {
  'auth-server': {
    sources: ['auth-server/src', 'common/src'],
    portVariable: 'AUTH_PORT',
    dataVariable: 'DATA_DIR',
    // With DATABASE_URL, keys and clients are in PostgreSQL (auth-server/src/state/open.ts).
    keepsDataIn: (environment) => !environment['DATABASE_URL'],
  },
  predictor: {
    sources: ['predictor/src', 'common/src'],
    portVariable: 'PREDICTOR_PORT',
    dataVariable: 'PREDICTOR_DATA_DIR',
    // SQLite idempotency records (the default without DATABASE_URL) and the API-key database.
    keepsDataIn: (environment) => {
      const idempotency = environment['IDEMPOTENCY_STORE'] ?? (environment['DATABASE_URL'] ? 'postgres' : 'sqlite');
      return idempotency === 'sqlite' || environment['API_KEYS'] !== 'false';
    },
  },
  // The caller container runs the demo (test/src) on the caller library.
  caller: { sources: ['test/src', 'caller/src', 'common/src'] },
  // The usage-ledger process (usage/src/main.ts): its port is the admin one (/healthz, GET /v1/usage).
  usage: {
    sources: ['usage/src', 'common/src'],
    portVariable: 'USAGE_ADMIN_PORT',
    dataVariable: 'USAGE_DATA_DIR',
    // With DATABASE_URL the ledger is in PostgreSQL; without it, an SQLite file in USAGE_DATA_DIR.
    keepsDataIn: (environment) => !environment['DATABASE_URL'],
  },
};
const DISTRIBUTED = 'distributed';
/** Read by Node.js itself or by every library, not by our configuration code. */
const ALWAYS_ALLOWED = new Set(['NODE_ENV', 'NODE_OPTIONS']);

interface ComposeService {
  build?: string | { context?: string; dockerfile?: string };
  image?: string;
  command?: string | string[];
  env_file?: string | (string | { path: string })[];
  environment?: Record<string, string | number | boolean | null> | string[];
  ports?: (string | number | { target: number; published?: string | number })[];
  volumes?: (string | { type?: string; source?: string; target: string })[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: string | string[]; disable?: boolean };
  profiles?: string[];
  restart?: string;
  stop_grace_period?: string;
}

interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

const root = (path: string) => join(REPOSITORY_ROOT, path);
const composeText = readFileSync(root('docker-compose.yml'), 'utf8');
// `merge`: the distributed replicas are merged from templates (`<<: *auth-server-replica`), as Compose does.
const compose = parseYaml(composeText, { merge: true }) as ComposeFile;
const services = compose?.services ?? {};
const builtServices = Object.entries(services).filter(([, service]) => service.build !== undefined);

function environmentOf(service: ComposeService): Record<string, string> {
  const { environment } = service;
  if (environment === undefined) return {};
  if (Array.isArray(environment)) {
    return Object.fromEntries(environment.map((entry) => [entry.split('=', 1)[0]!, entry.slice(entry.indexOf('=') + 1)]));
  }
  return Object.fromEntries(Object.entries(environment).map(([key, value]) => [key, value === null ? '' : String(value)]));
}

function envFilesOf(service: ComposeService): string[] {
  const { env_file: envFile } = service;
  if (envFile === undefined) return [];
  return (Array.isArray(envFile) ? envFile : [envFile]).map((entry) => (typeof entry === 'string' ? entry : entry.path));
}

function buildOf(service: ComposeService): { context: string; dockerfile: string } {
  const build = typeof service.build === 'string' ? { context: service.build } : (service.build ?? {});
  return { context: build.context ?? '.', dockerfile: build.dockerfile ?? 'Dockerfile' };
}

function dockerfilePathOf(service: ComposeService): string {
  const { context, dockerfile } = buildOf(service);
  return posix.normalize(posix.join(context, dockerfile));
}

/** `auth-server-2` → `auth-server`: the folder of the Dockerfile a built service runs. */
function kindOf(name: string): string {
  const service = services[name];
  assert.ok(service?.build !== undefined, `service ${name} is not built from this repository`);
  return dockerfilePathOf(service).split('/')[0]!;
}

function codeOf(name: string): ServiceCode {
  const code = SERVICE_CODE[kindOf(name)];
  assert.ok(code, `service ${name} is built from ${dockerfilePathOf(services[name]!)}, whose code the test does not know; add it to SERVICE_CODE`);
  return code;
}

const profilesOf = (service: ComposeService) => service.profiles ?? [];
/** The services of the distributed profile (they start with `--profile distributed`, beside the default ones). */
const distributedServices = Object.entries(services).filter(([, service]) => profilesOf(service).includes(DISTRIBUTED));
const distributedBuilt = distributedServices.filter(([, service]) => service.build !== undefined);
const replicasOf = (kind: string) => distributedBuilt.filter(([name]) => kindOf(name) === kind);

/** `${VAR:-default}` and `${VAR-default}` → default, `${VAR}` → '': the value with nothing set in the shell. */
function interpolate(value: string): string {
  return value.replace(/\$\{(\w+)(?::?-([^}]*))?\}/g, (_match, _name: string, fallback?: string) => fallback ?? '');
}

function dependsOnOf(service: ComposeService): Map<string, string | undefined> {
  const dependsOn = service.depends_on;
  if (dependsOn === undefined) return new Map();
  return new Map(Array.isArray(dependsOn) ? dependsOn.map((target) => [target, undefined]) : Object.entries(dependsOn).map(([target, options]) => [target, options?.condition]));
}

function imageOf(name: string): string {
  return services[name]?.image ?? '';
}

// ---------------------------------------------------------------------------
// The variables and routes the code reads
// ---------------------------------------------------------------------------

function typeScriptFiles(folder: string): string[] {
  const files: string[] = [];
  const walk = (directory: string) => {
    for (const entry of readdirSync(directory, { withFileTypes: true })) {
      const path = join(directory, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) files.push(path);
    }
  };
  if (existsSync(root(folder))) walk(root(folder));
  return files;
}

const sourceCache = new Map<string, string>();
function sourcesOf(folders: string[]): string {
  return folders
    .map((folder) => {
      let text = sourceCache.get(folder);
      if (text === undefined) {
        text = typeScriptFiles(folder)
          .map((file) => readFileSync(file, 'utf8'))
          .join('\n');
        sourceCache.set(folder, text);
      }
      return text;
    })
    .join('\n');
}

const NAME = String.raw`['"\`]([A-Z][A-Z0-9_]*)['"\`]`;
/** How the code reads a variable (common/src/env.ts's EnvReader, or an environment object). */
const READ_PATTERNS = [
  // read.string('NAME' …), read.port('NAME', 9000), read.url(…), read.oneOf(…): the EnvReader
  new RegExp(String.raw`\bread\.\w+\(\s*${NAME}`, 'g'),
  // env['NAME'], process.env['NAME'], DEV_ENV['NAME'], devEnv['NAME']
  new RegExp(String.raw`\b\w*(?:env|Env|ENV)\[\s*${NAME}\s*\]`, 'g'),
  // process.env.NAME, env.NAME
  /\b\w*(?:env|Env|ENV)\.([A-Z][A-Z0-9_]*)\b/g,
  // a table of variables read by name, e.g. the demo clients' `secretVariable: 'DEMO_CALLER_SECRET'`
  new RegExp(String.raw`\b\w*Variable\s*:\s*${NAME}`, 'g'),
];

function variablesReadBy(folders: string[]): Set<string> {
  const text = sourcesOf(folders);
  const names = new Set<string>();
  for (const pattern of READ_PATTERNS) for (const match of text.matchAll(pattern)) names.add(match[1]!);
  return names;
}

/** `read.port('AUTH_PORT', 9000)` → 9000. */
function defaultPortInCode(code: ServiceCode, variable: string): number | undefined {
  const match = new RegExp(String.raw`read\.port\(\s*['"]${variable}['"]\s*,\s*(\d+)\s*\)`).exec(sourcesOf(code.sources));
  return match ? Number(match[1]) : undefined;
}

const devEnv = parseEnv(readFileSync(root('dev.env'), 'utf8')) as Record<string, string>;

// ---------------------------------------------------------------------------
// Dockerfiles
// ---------------------------------------------------------------------------

interface Instruction {
  keyword: string;
  args: string;
  /** Index of the stage (FROM) the instruction belongs to. */
  stage: number;
}

function parseDockerfile(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let stage = -1;
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && pending === '')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = `${pending}${line}`.trim();
    pending = '';
    if (full === '') continue;
    const [keyword = ''] = full.split(/\s+/);
    const upper = keyword.toUpperCase();
    if (upper === 'FROM') stage += 1;
    instructions.push({ keyword: upper, args: full.slice(keyword.length).trim(), stage });
  }
  return instructions;
}

/** Splits COPY/ADD arguments into flags, sources and destination (shell or JSON form). */
function copyArguments(args: string): { flags: string[]; sources: string[]; destination: string } {
  const flags: string[] = [];
  let rest = args.trim();
  for (let flag = /^(--\S+)\s*/.exec(rest); flag; flag = /^(--\S+)\s*/.exec(rest)) {
    flags.push(flag[1]!);
    rest = rest.slice(flag[0].length);
  }
  const paths = rest.startsWith('[') ? (JSON.parse(rest) as string[]) : rest.split(/\s+/);
  return { flags, sources: paths.slice(0, -1), destination: paths.at(-1)! };
}

function jsonForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  try {
    return JSON.parse(args) as string[];
  } catch {
    return undefined;
  }
}

const dockerfiles = new Map<string, Instruction[]>();
function dockerfile(path: string): Instruction[] {
  let instructions = dockerfiles.get(path);
  if (!instructions) {
    instructions = parseDockerfile(readFileSync(root(path), 'utf8'));
    dockerfiles.set(path, instructions);
  }
  return instructions;
}

function finalStage(instructions: Instruction[]): Instruction[] {
  const last = Math.max(...instructions.map((instruction) => instruction.stage));
  return instructions.filter((instruction) => instruction.stage === last);
}

/** `ENV A=1 B=2` and the legacy `ENV A 1` → entries. */
function envEntries(args: string): [string, string][] {
  if (!args.includes('=')) {
    const [key = '', ...value] = args.split(/\s+/);
    return [[key, value.join(' ')]];
  }
  return [...args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g)].map((match) => [match[1]!, match[2]!.replace(/^"|"$/g, '')]);
}

/** The absolute path a COPY destination lands on, given the WORKDIR in force. */
function imagePath(instructions: Instruction[], at: Instruction, destination: string): string {
  let workdir = '/';
  for (const instruction of instructions) {
    if (instruction === at) break;
    if (instruction.stage === at.stage && instruction.keyword === 'WORKDIR') workdir = posix.resolve(workdir, instruction.args);
  }
  return posix.resolve(workdir, destination);
}

/** True when a path (globs `*` and `?` allowed in any segment) matches something in the repository. */
function existsInRepository(pattern: string): boolean {
  const segments = posix.normalize(pattern).replace(/\/$/, '').split('/').filter((segment) => segment !== '.' && segment !== '');
  const walk = (directory: string, index: number): boolean => {
    if (index === segments.length) return true;
    const segment = segments[index]!;
    if (!/[*?[]/.test(segment)) {
      const next = join(directory, segment);
      return existsSync(next) && (index === segments.length - 1 || statSync(next).isDirectory()) && walk(next, index + 1);
    }
    const regex = new RegExp(`^${segment.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')}$`);
    return readdirSync(directory, { withFileTypes: true }).some(
      (entry) => regex.test(entry.name) && (index === segments.length - 1 || entry.isDirectory()) && walk(join(directory, entry.name), index + 1),
    );
  };
  return walk(REPOSITORY_ROOT, 0);
}

/** A minimal .dockerignore matcher (`*`, `?`, `**`, `!` exceptions; a match excludes everything below). */
function dockerIgnored(path: string): boolean {
  const file = root('.dockerignore');
  if (!existsSync(file)) return false;
  const rules = readFileSync(file, 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const negated = line.startsWith('!');
      const pattern = posix.normalize(negated ? line.slice(1) : line).replace(/^\/|\/$/g, '');
      const source = pattern
        .split('/')
        .map((segment) => (segment === '**' ? '.*' : segment.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')))
        .join('/')
        .replace(/\.\*\//g, '(?:.*/)?');
      return { negated, regex: new RegExp(`^${source}(?:/.*)?$`) };
    });
  const normalized = posix.normalize(path).replace(/^\.\/|\/$/g, '');
  let ignored = false;
  for (const rule of rules) if (rule.regex.test(normalized)) ignored = !rule.negated;
  return ignored;
}

/** The port and path of the `http://localhost:<port>/<path>` a health check fetches. */
function healthUrl(command: string): { port: number; path: string } | undefined {
  const match = /https?:\/\/(?:localhost|127\.0\.0\.1):(\d+)(\/[^'"\s)`]*)/.exec(command);
  return match ? { port: Number(match[1]), path: match[2]! } : undefined;
}

function healthCommand(service: ComposeService): string | undefined {
  const test = service.healthcheck?.test;
  if (test === undefined || service.healthcheck?.disable) return undefined;
  return Array.isArray(test) ? test.join(' ') : test;
}

function dockerfileHealthcheck(instructions: Instruction[]): string | undefined {
  return finalStage(instructions).find((instruction) => instruction.keyword === 'HEALTHCHECK' && !/^NONE\b/i.test(instruction.args))?.args;
}

interface BuildEntry {
  name: string;
  source: string;
}
const { ENTRIES } = (await import(pathToFileURL(root('scripts/build-entries.mjs')).href)) as { ENTRIES: readonly BuildEntry[] };
const entryNames = new Set(ENTRIES.map((entry) => entry.name));

/** `["node", "dist/demo.js", …]` → `demo`, or undefined when it runs no bundle. */
function bundleRunBy(command: string[]): string | undefined {
  if (command[0] !== 'node') return undefined;
  const script = command.slice(1).find((argument) => !argument.startsWith('-'));
  return /^(?:\.\/)?dist\/([\w-]+)\.js$/.exec(script ?? '')?.[1];
}

// ---------------------------------------------------------------------------
// The load balancer of the distributed profile (nginx)
// ---------------------------------------------------------------------------

interface NginxDirective {
  name: string;
  args: string[];
  /** The directives inside `{ … }` (http, upstream, server, location, map, events). */
  block?: NginxDirective[];
}

/** A minimal nginx configuration parser: directives, nested blocks, quoted strings and comments. */
function parseNginx(text: string): NginxDirective[] {
  const tokens = [...text.matchAll(/#[^\n]*|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([{};])|([^\s{};#"']+)/g)]
    .filter((match) => !match[0].startsWith('#'))
    .map((match) => ({ text: match[1] ?? match[2] ?? match[3] ?? match[4]!, structural: match[3] !== undefined }));
  let index = 0;
  const parseBlock = (nested: boolean): NginxDirective[] => {
    const directives: NginxDirective[] = [];
    let words: string[] = [];
    while (index < tokens.length) {
      const token = tokens[index++]!;
      if (!token.structural) {
        words.push(token.text);
        continue;
      }
      if (token.text === '}') {
        assert.ok(nested && words.length === 0, `nginx configuration: unexpected } after ${words.join(' ') || 'nothing'}`);
        return directives;
      }
      assert.ok(words.length > 0, `nginx configuration: ${token.text} without a directive`);
      directives.push({ name: words[0]!, args: words.slice(1), ...(token.text === '{' ? { block: parseBlock(true) } : {}) });
      words = [];
    }
    assert.ok(!nested && words.length === 0, 'nginx configuration: unterminated block or directive');
    return directives;
  };
  return parseBlock(false);
}

const directivesNamed = (directives: NginxDirective[] | undefined, name: string) => (directives ?? []).filter((directive) => directive.name === name);

interface Upstream {
  /** `server host:port params…` */
  servers: { host: string; port: number; params: string[] }[];
  directives: NginxDirective[];
}

interface LoadBalancer {
  name: string;
  service: ComposeService;
  /** The nginx.conf mounted into it, relative to the repository root. */
  configPath: string;
  http: NginxDirective[];
  upstreams: Map<string, Upstream>;
  /** Listening port → the upstream its locations proxy to. */
  listeners: Map<number, string>;
}

const NGINX_CONF = '/etc/nginx/nginx.conf';

/** The distributed profile's `lb` and the nginx configuration it mounts (asserts the shape on the way). */
function loadBalancer(): LoadBalancer {
  const name = 'lb';
  const service = services[name];
  assert.ok(service, 'the distributed profile needs a load balancer service `lb`');
  assert.match(service.image ?? '', /^nginx:/, 'lb runs nginx');
  const mount = (service.volumes ?? [])
    .map((volume) => (typeof volume === 'object' ? { source: volume.source ?? '', target: volume.target } : { source: volume.split(':')[0] ?? '', target: volume.split(':')[1] ?? '' }))
    .find((volume) => volume.target === NGINX_CONF);
  assert.ok(mount, `lb must mount its configuration at ${NGINX_CONF}`);
  assert.match(mount.source, /^\.\/deploy\//, 'the LB configuration is committed under deploy/');
  const configPath = posix.normalize(mount.source);
  assert.ok(existsSync(root(configPath)), `${configPath} (mounted by lb) does not exist`);
  const top = parseNginx(readFileSync(root(configPath), 'utf8'));
  const [http] = directivesNamed(top, 'http');
  assert.ok(http?.block, `${configPath}: no http { } block`);
  const upstreams = new Map<string, Upstream>();
  for (const upstream of directivesNamed(http.block, 'upstream')) {
    const servers = directivesNamed(upstream.block, 'server').map((server) => {
      const match = /^([\w.-]+):(\d+)$/.exec(server.args[0] ?? '');
      assert.ok(match, `${configPath}: upstream ${upstream.args[0]}: server ${server.args.join(' ')} is not host:port`);
      return { host: match[1]!, port: Number(match[2]), params: server.args.slice(1) };
    });
    upstreams.set(upstream.args[0]!, { servers, directives: upstream.block ?? [] });
  }
  const listeners = new Map<number, string>();
  for (const server of directivesNamed(http.block, 'server')) {
    const passes = directivesNamed(server.block, 'location').flatMap((location) => directivesNamed(location.block, 'proxy_pass'));
    for (const listen of directivesNamed(server.block, 'listen')) {
      const port = Number(/(\d+)$/.exec(listen.args[0] ?? '')?.[1]);
      assert.ok(passes.length > 0, `${configPath}: the server listening on ${port} proxies nowhere`);
      for (const pass of passes) {
        const target = /^https?:\/\/([\w.-]+)\/?$/.exec(pass.args[0] ?? '')?.[1];
        assert.ok(target && upstreams.has(target), `${configPath}: proxy_pass ${pass.args[0]} on port ${port} names no upstream block`);
        assert.ok(!listeners.has(port) || listeners.get(port) === target, `${configPath}: port ${port} proxies to two upstreams`);
        listeners.set(port, target);
      }
    }
  }
  return { name, service, configPath, http: http.block, upstreams, listeners };
}

/** The ports the service listens on in its container: *_PORT for ours, the listeners for the LB. */
function listeningPortsOf(name: string): number[] {
  if (name === 'lb') return [...loadBalancer().listeners.keys()];
  return Object.entries(environmentOf(services[name]!))
    .filter(([variable]) => variable.endsWith('_PORT'))
    .map(([, value]) => Number(value));
}

/** `"19000:9000"`, `"127.0.0.1:19000:9000/tcp"`, `{ target, published }` → host and container port. */
function publishedPorts(service: ComposeService): { host: string | undefined; container: number }[] {
  return (service.ports ?? []).map((mapping) => {
    if (typeof mapping === 'object') return { host: mapping.published === undefined ? undefined : String(mapping.published), container: Number(mapping.target) };
    const parts = String(mapping).split('/')[0]!.split(':');
    return { host: parts.length > 1 ? parts.at(-2) : undefined, container: Number(parts.at(-1)) };
  });
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

describe('docker-compose.yml', () => {
  it('parses and has the auth-server, the predictor, the caller and the distributed profile services', () => {
    assert.equal(typeof compose, 'object');
    for (const name of ['auth-server', 'predictor', 'caller']) {
      assert.ok(services[name], `service ${name} missing`);
      assert.ok(services[name].build, `service ${name} must be built from this repository`);
      assert.equal(services[name].profiles, undefined, `service ${name} must start with a plain \`docker compose up\``);
    }
    for (const name of ['redis', 'postgres', 'nats', 'lb', 'usage-ledger']) assert.ok(services[name], `service ${name} missing`);
    for (const [name, service] of Object.entries(services)) {
      if (service.profiles === undefined) continue;
      assert.deepEqual(service.profiles, [DISTRIBUTED], `${name} belongs to the distributed profile only`);
      assert.ok(healthCommand(service), `${name} needs a health check`);
    }
    assert.match(services['redis']?.image ?? '', /^redis:7/);
    assert.match(services['postgres']?.image ?? '', /^postgres:16/);
    assert.match(services['nats']?.image ?? '', /^nats:2\b/);
    assert.ok(replicasOf('auth-server').length >= 2, 'the distributed profile runs two or more auth-server replicas');
    assert.ok(replicasOf('predictor').length >= 2, 'the distributed profile runs two or more predictor replicas');
    assert.deepEqual(
      replicasOf('usage').map(([name]) => name),
      ['usage-ledger'],
      'the distributed profile runs the usage-ledger process (usage/Dockerfile)',
    );
    assert.deepEqual(
      distributedBuilt.filter(([name]) => !['auth-server', 'predictor', 'usage'].includes(kindOf(name))).map(([name]) => name),
      [],
      'the distributed profile builds only auth-server and predictor replicas and the usage-ledger',
    );
  });

  it('the caller runs the demo once against the compose services', () => {
    const caller = services['caller']!;
    const command = Array.isArray(caller.command) ? caller.command : (caller.command ?? '').split(/\s+/);
    assert.equal(bundleRunBy(command), 'demo');
    assert.equal(caller.restart, 'no');
    assert.equal(environmentOf(caller)['DEMO_TARGET'], 'external');
  });

  it('restarts every long-running service after a failure, and never the one-shot caller demo', () => {
    // on-failure: the servers exit 0 only when told to stop, non-zero on a crash or an unreachable dependency.
    for (const [name, service] of Object.entries(services)) {
      if (name === 'caller') continue;
      assert.match(service.restart ?? 'no', /^(on-failure(:\d+)?|unless-stopped)$/, `${name}: restart ${service.restart ?? '(none)'}; a long-running service needs on-failure or unless-stopped`);
    }
    assert.ok([undefined, 'no'].includes(services['caller']!.restart), `caller: restart ${services['caller']!.restart}; the demo runs once, and --exit-code-from needs its first exit`);
  });

  it('documents `docker compose up --build --exit-code-from caller`, which returns the demo’s result', () => {
    const page = readFileSync(root('docs/docker-compose.md'), 'utf8');
    assert.match(page, /^docker compose up --build --exit-code-from caller\b/m, 'docs/docker-compose.md: the command that returns the demo’s exit code');
    assert.match(readFileSync(root('README.md'), 'utf8'), /^docker compose up --build --exit-code-from caller\b/m, 'README: the compose way to run it');
    assert.match(composeText, /docker compose up --build --exit-code-from caller\b/, 'docker-compose.yml names the command in its header');
    // --exit-code-from implies --abort-on-container-exit: the services it depends on must be long-running, not one-shot.
    for (const dependency of dependsOnOf(services['caller']!).keys()) assert.ok(services[dependency]?.healthcheck, `caller depends on ${dependency}, which needs a health check`);
  });

  it('sets only variables that each service’s code reads', () => {
    const unread: string[] = [];
    for (const [name, service] of builtServices) {
      const read = variablesReadBy(codeOf(name).sources);
      for (const variable of Object.keys(environmentOf(service))) {
        if (!ALWAYS_ALLOWED.has(variable) && !read.has(variable)) unread.push(`${name}: ${variable}`);
      }
    }
    assert.deepEqual(unread, [], 'variables set in docker-compose.yml that no code of the service reads (renamed? misspelt? not written yet?)');
  });

  it('loads dev credentials only from dev.env, and every dev.env key is read by some service', () => {
    const readAnywhere = new Set(Object.values(SERVICE_CODE).flatMap((code) => [...variablesReadBy(code.sources)]));
    const unread = Object.keys(devEnv).filter((key) => !readAnywhere.has(key));
    assert.deepEqual(unread, [], 'dev.env keys no service reads');
    for (const [name, service] of builtServices) {
      for (const file of envFilesOf(service)) {
        assert.equal(file, 'dev.env', `${name} loads ${file}; dev credentials live in dev.env only`);
        assert.ok(existsSync(root(file)), `${name}: env_file ${file} does not exist`);
      }
      for (const [variable, value] of Object.entries(environmentOf(service))) {
        assert.ok(!Object.values(devEnv).includes(value), `${name}: ${variable} repeats a dev.env credential inline; load it through env_file`);
      }
    }
    assert.ok(envFilesOf(services['auth-server']!).includes('dev.env'), 'the auth-server needs the demo clients of dev.env');
    assert.ok(envFilesOf(services['caller']!).includes('dev.env'), 'the caller needs the demo clients of dev.env');
    for (const [name, service] of replicasOf('usage')) assert.ok(envFilesOf(service).includes('dev.env'), `${name} needs the ADMIN_TOKEN of dev.env for its report`);
  });

  it('maps each published port to the port the service listens on', () => {
    for (const [name, service] of builtServices) {
      const environment = environmentOf(service);
      const listening = Object.entries(environment).filter(([variable]) => variable.endsWith('_PORT'));
      const containerPorts = (service.ports ?? []).map((mapping) =>
        typeof mapping === 'object' ? Number(mapping.target) : Number(String(mapping).split(':').at(-1)!.split('/')[0]),
      );
      for (const port of containerPorts) {
        assert.ok(
          listening.some(([, value]) => Number(value) === port),
          `${name} publishes container port ${port}, but listens on ${listening.map(([variable, value]) => `${variable}=${value}`).join(', ') || 'no *_PORT'}`,
        );
      }
      const { portVariable } = codeOf(name);
      if (portVariable) {
        assert.ok(environment[portVariable], `${name} must set ${portVariable} explicitly`);
        // The default profile's servers are reached from the host; the distributed replicas only through the LB.
        if (profilesOf(service).includes(DISTRIBUTED)) assert.deepEqual(containerPorts, [], `${name} is a replica behind the LB and must publish no port`);
        else assert.ok(containerPorts.includes(Number(environment[portVariable])), `${name} must publish ${portVariable}=${environment[portVariable]}`);
      }
    }
  });

  it('points every URL naming a compose service at a port that service listens on, and agrees on issuer and audience', () => {
    const portsOf = listeningPortsOf;
    for (const [name, service] of builtServices) {
      for (const [variable, value] of Object.entries(environmentOf(service))) {
        if (!/^https?:\/\//.test(value)) continue;
        const url = new URL(value);
        if (!services[url.hostname]) continue;
        const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
        assert.ok(portsOf(url.hostname).includes(port), `${name}: ${variable}=${value}, but ${url.hostname} listens on ${portsOf(url.hostname).join(', ')}`);
      }
    }
    // Per stack: the default services, and the distributed replicas (whose issuer is the LB).
    const stacks = [builtServices.filter(([, service]) => service.profiles === undefined), distributedBuilt];
    for (const stack of stacks) {
      for (const variable of ['ISSUER', 'PREDICTOR_AUDIENCE']) {
        const values = new Set(stack.map(([, service]) => environmentOf(service)[variable]).filter((value) => value !== undefined));
        assert.equal(values.size, 1, `${variable} differs between ${stack.map(([name]) => name).join(', ')}: ${[...values].join(', ')} (tokens would be refused)`);
      }
    }
    assert.equal(environmentOf(services['caller']!)['PREDICTOR_URL'], environmentOf(services['predictor']!)['PREDICTOR_AUDIENCE']);
  });

  it('the default port in the code is the port the Dockerfile exposes', () => {
    for (const [name, service] of builtServices) {
      const { portVariable } = codeOf(name);
      if (!portVariable) continue;
      const fallback = defaultPortInCode(codeOf(name), portVariable);
      assert.ok(fallback !== undefined, `no read.port('${portVariable}', <default>) in ${codeOf(name).sources.join(', ')}`);
      const exposed = dockerfile(dockerfilePathOf(service))
        .filter((instruction) => instruction.keyword === 'EXPOSE')
        .flatMap((instruction) => instruction.args.split(/\s+/).map((port) => Number(port.split('/')[0])));
      assert.ok(exposed.includes(fallback), `${dockerfilePathOf(service)} exposes ${exposed.join(', ') || 'nothing'}, the code listens on ${fallback} by default`);
    }
  });

  it('health checks fetch a route the service serves, on the port it listens on', () => {
    for (const [name, service] of builtServices) {
      const code = codeOf(name);
      const checks: [string, string, number | undefined][] = [];
      const composeCheck = healthCommand(service);
      if (composeCheck) checks.push(['docker-compose.yml', composeCheck, Number(environmentOf(service)[code.portVariable ?? ''])]);
      const imageCheck = dockerfileHealthcheck(dockerfile(dockerfilePathOf(service)));
      if (imageCheck) checks.push([dockerfilePathOf(service), imageCheck, code.portVariable === undefined ? undefined : defaultPortInCode(code, code.portVariable)]);
      if (code.portVariable) assert.ok(composeCheck, `${name} listens, so it needs a health check`);
      for (const [where, command, port] of checks) {
        const url = healthUrl(command);
        assert.ok(url, `${where}: ${name}'s health check fetches no http://localhost URL: ${command}`);
        assert.equal(url.port, port, `${where}: ${name}'s health check uses port ${url.port}, the service listens on ${port}`);
        const source = sourcesOf(code.sources.filter((folder) => folder !== 'common/src'));
        assert.ok(source.includes(`'${url.path}'`), `${where}: ${name} has no route '${url.path}' in ${code.sources.join(', ')}`);
      }
    }
  });

  it('depends_on with service_healthy names only services that have a health check', () => {
    for (const [name, service] of Object.entries(services)) {
      const dependsOn = service.depends_on;
      if (dependsOn === undefined) continue;
      const conditions: [string, string | undefined][] = Array.isArray(dependsOn)
        ? dependsOn.map((target) => [target, undefined])
        : Object.entries(dependsOn).map(([target, options]) => [target, options?.condition]);
      for (const [target, condition] of conditions) {
        const dependency = services[target];
        assert.ok(dependency, `${name} depends on ${target}, which is not a service`);
        if (condition !== 'service_healthy') continue;
        const hasCheck =
          healthCommand(dependency) !== undefined || (dependency.build !== undefined && dockerfileHealthcheck(dockerfile(dockerfilePathOf(dependency))) !== undefined);
        assert.ok(hasCheck, `${name} waits for ${target} to be healthy, but ${target} has no health check`);
      }
    }
    assert.deepEqual(Object.keys((services['predictor']?.depends_on ?? {}) as object), ['auth-server']);
    assert.ok(Object.keys((services['caller']?.depends_on ?? {}) as object).includes('predictor'));
  });

  it('declares every named volume, and keeps each data directory on one', () => {
    const declared = new Set(Object.keys(compose.volumes ?? {}));
    for (const [name, service] of Object.entries(services)) {
      const mounts = (service.volumes ?? []).map((volume) => {
        if (typeof volume === 'object') return { source: volume.source ?? '', target: volume.target, named: volume.type === 'volume' };
        const [source = '', target = ''] = volume.split(':');
        return { source, target, named: !/^[./~]/.test(source) };
      });
      for (const mount of mounts.filter((entry) => entry.named)) {
        assert.ok(declared.has(mount.source), `${name} mounts volume ${mount.source}, which is not declared under volumes:`);
      }
      const { dataVariable, keepsDataIn = () => true } = service.build === undefined ? {} : codeOf(name);
      if (dataVariable && keepsDataIn(environmentOf(service))) {
        const directory = environmentOf(service)[dataVariable];
        assert.ok(directory, `${name} must set ${dataVariable}`);
        assert.ok(
          mounts.some((mount) => mount.named && mount.target === directory),
          `${name}: ${dataVariable}=${directory} is not on a named volume (data would be lost with the container)`,
        );
      }
    }
    assert.deepEqual([...declared].sort(), ['auth-data', 'nats-data', 'postgres-data', 'predictor-data']);
    const postgresData = (services['postgres']?.volumes ?? []).find((volume) => (typeof volume === 'string' ? volume.split(':')[1] : volume.target) === '/var/lib/postgresql/data');
    assert.ok(postgresData, 'postgres keeps /var/lib/postgresql/data on the named volume postgres-data');
  });

  it('lets each server end its shutdown (grace + close margin) before compose kills it (stop_grace_period)', () => {
    // Compose's duration format: 1m30s, 15s, 500ms; its default is 10 s.
    const durationMs = (value: string | undefined) => {
      if (value === undefined) return 10_000;
      const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1_000, ms: 1, us: 0.001 };
      assert.match(value, /^(\d+(h|ms|m|s|us))+$/, `stop_grace_period ${value} is not a duration`);
      return [...value.matchAll(/(\d+)(h|ms|m|s|us)/g)].reduce((total, [, amount, unit]) => total + Number(amount) * units[unit!]!, 0);
    };
    for (const [name, service] of builtServices.filter(([entry]) => codeOf(entry).portVariable !== undefined)) {
      const graceMs = Number(environmentOf(service)['SHUTDOWN_GRACE_MS'] ?? DEFAULT_SHUTDOWN_GRACE_MS);
      const deadlineMs = graceMs + SHUTDOWN_CLOSE_MARGIN_MS;
      assert.ok(durationMs(service.stop_grace_period) > deadlineMs, `${name}: stop_grace_period ${service.stop_grace_period ?? '(default 10s)'} must exceed its shutdown deadline of ${deadlineMs} ms`);
    }
  });

  it('`docker compose config` accepts the file (where a compose binary works)', (t) => {
    const candidates: [string, string[]][] = [
      ['docker', ['compose']],
      ['docker-compose', []],
    ];
    for (const [binary, prefix] of candidates) {
      const version = spawnSync(binary, [...prefix, 'version'], { encoding: 'utf8', timeout: 5_000 });
      if (version.status !== 0) continue;
      const config = spawnSync(binary, [...prefix, '-f', 'docker-compose.yml', 'config', '-q'], { cwd: REPOSITORY_ROOT, encoding: 'utf8', timeout: 10_000 });
      assert.equal(config.status, 0, `${binary} ${prefix.join(' ')} config -q failed:\n${config.stderr}`);
      return;
    }
    t.skip('no `docker compose` or `docker-compose` binary that supports `config` is installed (docker itself has no compose plugin here)');
  });
});

describe('the distributed profile', () => {
  const auths = replicasOf('auth-server');
  const predictors = replicasOf('predictor');
  const ledgers = replicasOf('usage');
  const valuesOf = (replicas: [string, ComposeService][], variable: string) => new Set(replicas.map(([, service]) => environmentOf(service)[variable]));

  /** Variables the official images document (docs.docker.com / Docker Hub pages of postgres, redis, nats, nginx). */
  const IMAGE_VARIABLES: Record<string, Set<string>> = {
    postgres: new Set(['POSTGRES_USER', 'POSTGRES_PASSWORD', 'POSTGRES_PASSWORD_FILE', 'POSTGRES_DB', 'POSTGRES_INITDB_ARGS', 'POSTGRES_HOST_AUTH_METHOD', 'PGDATA']),
    redis: new Set(),
    // Configured by its flags (command), not by variables.
    nats: new Set(),
    nginx: new Set(['NGINX_ENVSUBST_TEMPLATE_DIR', 'NGINX_ENVSUBST_OUTPUT_DIR', 'NGINX_ENTRYPOINT_QUIET_LOGS']),
  };

  it('sets on the images it does not build only the variables those images read', () => {
    for (const [name, service] of distributedServices.filter(([, entry]) => entry.build === undefined)) {
      const image = imageOf(name).split(':')[0]!;
      const known = IMAGE_VARIABLES[image];
      assert.ok(known, `${name}: the test does not know the variables of image ${imageOf(name)}; add them to IMAGE_VARIABLES`);
      for (const variable of Object.keys(environmentOf(service))) assert.ok(known.has(variable), `${name}: ${variable} is not a variable of ${imageOf(name)}`);
    }
  });

  it('the replicas set the scale-out variables, and their code reads every one (as the config files do)', () => {
    const predictorReads = variablesReadBy(SERVICE_CODE['predictor']!.sources);
    const authReads = variablesReadBy(SERVICE_CODE['auth-server']!.sources);
    for (const variable of ['REDIS_URL', 'REDIS_KEY_PREFIX', 'DATABASE_URL', 'DATABASE_SCHEMA', 'RATE_LIMIT_ON_STORE_FAILURE', 'IDEMPOTENCY_ON_STORE_FAILURE', 'DEGRADED_LIMIT_PERCENT', 'SIMULATED_INFERENCE_MS']) {
      assert.ok(predictorReads.has(variable), `predictor/src reads no ${variable}`);
    }
    for (const variable of ['DATABASE_URL', 'DATABASE_SCHEMA', 'STATE_SYNC_MS']) assert.ok(authReads.has(variable), `auth-server/src reads no ${variable}`);
    for (const variable of ['NATS_URL', 'USAGE_STREAM', 'USAGE_SUBJECT_PREFIX', 'USAGE_OUTBOX_RETENTION_SECONDS']) assert.ok(predictorReads.has(variable), `predictor/src reads no ${variable}`);
    const usageReads = variablesReadBy(SERVICE_CODE['usage']!.sources);
    for (const variable of ['NATS_URL', 'USAGE_STREAM', 'USAGE_SUBJECT_PREFIX', 'USAGE_CONSUMER', 'DATABASE_URL', 'DATABASE_SCHEMA', 'USAGE_ADMIN_HOST']) {
      assert.ok(usageReads.has(variable), `usage/src reads no ${variable}`);
    }
    for (const [name, service] of predictors) {
      const environment = environmentOf(service);
      for (const variable of ['REDIS_URL', 'DATABASE_URL', 'ISSUER', 'PREDICTOR_AUDIENCE']) assert.ok(environment[variable], `${name} must set ${variable}`);
      // A rehearsal knob: never in a compose setup that someone may take for a template.
      assert.equal(environment['SIMULATED_INFERENCE_MS'], undefined, `${name}: SIMULATED_INFERENCE_MS is for rehearsals only`);
      assert.ok([undefined, 'redis'].includes(environment['RATE_LIMIT_STORE']), `${name}: RATE_LIMIT_STORE=${environment['RATE_LIMIT_STORE']} keeps limits per replica`);
      assert.ok([undefined, 'postgres'].includes(environment['IDEMPOTENCY_STORE']), `${name}: IDEMPOTENCY_STORE=${environment['IDEMPOTENCY_STORE']} keeps idempotency records per replica`);
    }
    for (const [name, service] of auths) {
      assert.ok(environmentOf(service)['DATABASE_URL'], `${name} must set DATABASE_URL (keys and clients shared by the replicas)`);
      assert.ok(envFilesOf(service).includes('dev.env'), `${name} needs the demo clients of dev.env, as the default auth-server`);
      assert.equal(environmentOf(service)['ADMIN_HOST'], undefined, `${name}: the admin interface stays on the replica's loopback`);
    }
  });

  it('the replicas and the usage-ledger point at the redis and postgres services of the profile, and wait for them', () => {
    const postgres = environmentOf(services['postgres']!);
    for (const [name, service] of [...predictors, ...auths, ...ledgers]) {
      const environment = environmentOf(service);
      const dependsOn = dependsOnOf(service);
      const targets: [string, RegExp, number][] = [['DATABASE_URL', /^postgres:/, 5432]];
      if (kindOf(name) === 'predictor') targets.push(['REDIS_URL', /^redis:/, 6379]);
      for (const [variable, image, defaultPort] of targets) {
        const url = new URL(interpolate(environment[variable] ?? ''));
        const target = services[url.hostname];
        assert.ok(target, `${name}: ${variable} names ${url.hostname}, which is not a service`);
        assert.match(imageOf(url.hostname), image, `${name}: ${variable} names ${url.hostname}, which runs ${imageOf(url.hostname)}`);
        assert.ok(profilesOf(target).includes(DISTRIBUTED), `${name}: ${variable} names ${url.hostname}, which is not in the distributed profile`);
        assert.equal(Number(url.port || defaultPort), defaultPort, `${name}: ${variable} port`);
        assert.equal(dependsOn.get(url.hostname), 'service_healthy', `${name} must wait for ${url.hostname} to be healthy`);
      }
      const database = new URL(interpolate(environment['DATABASE_URL'] ?? ''));
      assert.equal(decodeURIComponent(database.username), interpolate(postgres['POSTGRES_USER'] ?? 'postgres'), `${name}: DATABASE_URL's user is not POSTGRES_USER`);
      assert.equal(decodeURIComponent(database.password), interpolate(postgres['POSTGRES_PASSWORD'] ?? ''), `${name}: DATABASE_URL's password is not POSTGRES_PASSWORD's default`);
      // The same variable on both sides, so that setting POSTGRES_PASSWORD changes both.
      assert.ok((environment['DATABASE_URL'] ?? '').includes(`:${postgres['POSTGRES_PASSWORD']}@`), `${name}: DATABASE_URL must interpolate POSTGRES_PASSWORD as the postgres service does`);
      assert.equal(database.pathname, `/${interpolate(postgres['POSTGRES_DB'] ?? '')}`, `${name}: DATABASE_URL's database is not POSTGRES_DB`);
    }
    for (const [name] of predictors) {
      for (const [auth] of auths) assert.ok(dependsOnOf(services[name]!).has(auth), `${name} should start after ${auth}`);
    }
    assert.match(interpolate(environmentOf(services['postgres']!)['POSTGRES_PASSWORD'] ?? ''), /dev/, 'the default POSTGRES_PASSWORD must say it is a dev one');
  });

  it('the replicas of each server share one configuration of issuer, audience and state', () => {
    for (const [replicas, variables] of [
      [auths, ['ISSUER', 'PREDICTOR_AUDIENCE', 'DATABASE_URL', 'DATABASE_SCHEMA', 'ACCESS_TOKEN_TTL', 'STATE_SYNC_MS']],
      [predictors, ['ISSUER', 'PREDICTOR_AUDIENCE', 'JWKS_URI', 'REDIS_URL', 'REDIS_KEY_PREFIX', 'DATABASE_URL', 'DATABASE_SCHEMA', 'RATE_LIMIT_ON_STORE_FAILURE', 'IDEMPOTENCY_ON_STORE_FAILURE', 'API_KEYS', 'NATS_URL', 'USAGE_STREAM', 'USAGE_SUBJECT_PREFIX', 'USAGE_OUTBOX_RETENTION_SECONDS']],
    ] as const) {
      for (const variable of variables) {
        const values = valuesOf(replicas, variable);
        assert.equal(values.size, 1, `${variable} differs between ${replicas.map(([name]) => name).join(', ')}: ${[...values].join(', ')}`);
      }
    }
    assert.deepEqual(valuesOf(predictors, 'ISSUER'), valuesOf(auths, 'ISSUER'), 'the predictors accept the issuer the auth-server replicas sign as');
    // API keys are a SQLite file per replica: a key made on one would be refused by the others.
    assert.deepEqual(valuesOf(predictors, 'API_KEYS'), new Set(['false']), 'API keys are not shared between predictor replicas; turn them off (API_KEYS=false)');
  });

  it('the predictors relay usage to the profile’s nats service (JetStream, on a named volume), and the usage-ledger consumes the same stream', () => {
    const nats = services['nats'];
    assert.ok(nats, 'the distributed profile needs a `nats` service');
    assert.match(imageOf('nats'), /^nats:2\b/, 'nats runs the official NATS 2 image');
    const command = Array.isArray(nats.command) ? nats.command : (nats.command ?? '').split(/\s+/).filter((word) => word !== '');
    /** The value after `-x` or `--long` (also `--long=value`). */
    const flag = (...names: string[]) => {
      for (const [index, word] of command.entries()) {
        for (const name of names) {
          if (word === name) return command[index + 1];
          if (word.startsWith(`${name}=`)) return word.slice(name.length + 1);
        }
      }
      return undefined;
    };
    assert.ok(command.includes('-js') || command.includes('--jetstream'), `nats: command ${command.join(' ')} does not enable JetStream (-js)`);
    // Flags only: the image's entrypoint runs nats-server with them (and no configuration file).
    assert.ok(command[0]?.startsWith('-'), `nats: command ${command.join(' ')} should be nats-server's flags`);
    const storeDir = flag('-sd', '--store_dir');
    assert.ok(storeDir, 'nats: set the JetStream store directory (-sd) and put it on a named volume');
    const mounts = (nats.volumes ?? []).map((volume) => (typeof volume === 'object' ? { source: volume.source ?? '', target: volume.target } : { source: volume.split(':')[0] ?? '', target: volume.split(':')[1] ?? '' }));
    const store = mounts.find((mount) => mount.target === storeDir);
    assert.ok(store && !/^[./~]/.test(store.source), `nats: -sd ${storeDir} is not on a named volume (unconsumed events would be lost with the container)`);
    const clientPort = Number(flag('-p', '--port') ?? 4222);
    const monitorPort = Number(flag('-m', '--http_port'));
    assert.ok(monitorPort > 0, 'nats: the health check needs the monitoring port (-m)');
    const check = healthUrl(healthCommand(nats) ?? '');
    assert.deepEqual(check, { port: monitorPort, path: '/healthz' }, `nats: the health check must fetch /healthz on the monitoring port ${monitorPort}`);

    /** NATS_URL names the nats service on its client port. */
    const assertNamesNats = (name: string, value: string | undefined) => {
      assert.ok(value, `${name} must set NATS_URL`);
      const url = new URL(value);
      assert.equal(url.protocol, 'nats:', `${name}: NATS_URL=${value}`);
      assert.equal(url.hostname, 'nats', `${name}: NATS_URL=${value} does not name the nats service`);
      assert.equal(Number(url.port || 4222), clientPort, `${name}: NATS_URL=${value}, but nats listens for clients on ${clientPort}`);
    };
    for (const [name, service] of [...predictors, ...ledgers]) assertNamesNats(name, environmentOf(service)['NATS_URL']);
    // Predictions never wait for the broker (the relay connects on first use); the ledger cannot start without it.
    for (const [name, service] of predictors) assert.ok(dependsOnOf(service).has('nats'), `${name} should start after nats`);
    for (const [name, service] of ledgers) assert.equal(dependsOnOf(service).get('nats'), 'service_healthy', `${name} must wait for nats to be healthy`);

    /** The value a service runs with: its environment, else the code's default. */
    const effective = (name: string, variable: string) => {
      const set = environmentOf(services[name]!)[variable];
      if (set !== undefined) return set;
      const fallback = new RegExp(String.raw`read\.string\(\s*['"]${variable}['"]\s*,\s*['"]([^'"]*)['"]\s*\)`).exec(sourcesOf(codeOf(name).sources));
      assert.ok(fallback, `${name}: no read.string('${variable}', <default>) in ${codeOf(name).sources.join(', ')}`);
      return fallback[1];
    };
    for (const variable of ['NATS_URL', 'USAGE_STREAM', 'USAGE_SUBJECT_PREFIX']) {
      const values = new Set([...predictors, ...ledgers].map(([name]) => (variable === 'NATS_URL' ? environmentOf(services[name]!)[variable] : effective(name, variable))));
      assert.equal(values.size, 1, `${variable} differs between the predictors and the usage-ledger: ${[...values].join(', ')} (events would go unconsumed)`);
    }
    for (const [name, service] of ledgers) {
      // Shared and durable: a ledger in the container's SQLite file would die with it.
      assert.ok(environmentOf(service)['DATABASE_URL'], `${name} must keep the ledger in the profile's PostgreSQL (DATABASE_URL)`);
    }
  });

  it('restarts the servers it builds after a failure at start (engines not reachable yet exit 1)', () => {
    for (const [name, service] of distributedBuilt) {
      assert.ok(['on-failure', 'unless-stopped', 'always'].includes(service.restart ?? 'no'), `${name}: restart ${service.restart ?? 'no'}; it exits 1 while PostgreSQL, Redis or NATS is unreachable`);
    }
  });

  it('the issuer is the LB’s auth listener, which balances exactly the auth-server replicas', () => {
    const lb = loadBalancer();
    const [issuer] = valuesOf(auths, 'ISSUER');
    const url = new URL(issuer ?? '');
    assert.equal(url.hostname, lb.name, `ISSUER=${issuer}: the replicas' issuer must be the public URL in front of them, the LB`);
    const upstream = lb.listeners.get(Number(url.port || 80));
    assert.ok(upstream, `ISSUER=${issuer}, but ${lb.configPath} does not listen on port ${url.port || 80}`);
    assert.deepEqual(
      lb.upstreams.get(upstream)!.servers.map((server) => server.host).sort(),
      auths.map(([name]) => name).sort(),
      `${lb.configPath}: upstream ${upstream} (the issuer's port) must balance exactly the auth-server replicas`,
    );
    const jwksUri = [...valuesOf(predictors, 'JWKS_URI')][0];
    if (jwksUri !== undefined) assert.equal(new URL(jwksUri).origin, url.origin, 'JWKS_URI must go through the LB as the issuer does');
  });

  it('the nginx upstreams name replicas of the profile, on the ports their code listens on, and leave none out', () => {
    const lb = loadBalancer();
    const balanced = new Set<string>();
    assert.ok(lb.upstreams.size > 0, `${lb.configPath}: no upstream block`);
    for (const [upstream, { servers }] of lb.upstreams) {
      assert.ok(servers.length >= 2, `${lb.configPath}: upstream ${upstream} balances ${servers.length} server(s)`);
      const kinds = new Set<string>();
      for (const server of servers) {
        const service = services[server.host];
        assert.ok(service, `${lb.configPath}: upstream ${upstream} names ${server.host}, which is not a service`);
        assert.ok(profilesOf(service).includes(DISTRIBUTED), `${lb.configPath}: ${server.host} is not in the distributed profile`);
        assert.ok(service.build !== undefined, `${lb.configPath}: ${server.host} is not built from this repository`);
        const code = codeOf(server.host);
        assert.ok(code.portVariable, `${lb.configPath}: ${server.host} listens on no port`);
        const fallback = defaultPortInCode(code, code.portVariable);
        assert.equal(server.port, fallback, `${lb.configPath}: ${server.host}:${server.port}, but the code listens on ${fallback} by default`);
        assert.equal(server.port, Number(environmentOf(service)[code.portVariable]), `${lb.configPath}: ${server.host}:${server.port}, but ${code.portVariable}=${environmentOf(service)[code.portVariable]}`);
        assert.notEqual(server.port, Number(environmentOf(service)['ADMIN_PORT'] ?? 9001), `${lb.configPath}: the admin interface must not be behind the LB`);
        kinds.add(kindOf(server.host));
        balanced.add(server.host);
      }
      assert.equal(kinds.size, 1, `${lb.configPath}: upstream ${upstream} mixes ${[...kinds].join(' and ')}`);
      if (servers.some((server) => server.params.includes('resolve'))) {
        assert.ok(directivesNamed(lb.upstreams.get(upstream)!.directives, 'zone').length === 1, `${lb.configPath}: upstream ${upstream}: \`resolve\` needs a zone`);
      }
    }
    assert.deepEqual(
      [...auths, ...predictors].map(([name]) => name).filter((name) => !balanced.has(name)),
      [],
      'replicas no upstream balances (they would take no traffic)',
    );
    assert.ok(
      [...lb.listeners.values()].some((upstream) => lb.upstreams.get(upstream)!.servers.every((server) => kindOf(server.host) === 'predictor')),
      `${lb.configPath}: no listener balances the predictor replicas`,
    );
    const usesResolve = [...lb.upstreams.values()].some(({ servers }) => servers.some((server) => server.params.includes('resolve')));
    if (usesResolve) {
      assert.ok(directivesNamed(lb.http, 'resolver').length > 0, `${lb.configPath}: upstream servers with \`resolve\` need a resolver`);
      const version = /^nginx:(\d+)\.(\d+)\.(\d+)/.exec(imageOf(lb.name));
      assert.ok(version, `lb: pin nginx to a patch release (\`resolve\` in upstream blocks needs open-source nginx 1.27.3 or later), not ${imageOf(lb.name)}`);
      const [major, minor, patch] = version.slice(1).map(Number) as [number, number, number];
      assert.ok(major > 1 || minor > 27 || (minor === 27 && patch >= 3), `lb: ${imageOf(lb.name)} is older than nginx 1.27.3 (no \`resolve\` in upstream blocks)`);
    }
  });

  it('the LB retries only connection errors, never a request that reached a replica, and passes the client’s Host and X-Forwarded-*', () => {
    const lb = loadBalancer();
    const everywhere = (directives: NginxDirective[]): NginxDirective[] => directives.flatMap((directive) => [directive, ...everywhere(directive.block ?? [])]);
    const all = everywhere(lb.http);
    const nextUpstream = all.filter((directive) => directive.name === 'proxy_next_upstream');
    assert.ok(nextUpstream.length > 0, `${lb.configPath}: set proxy_next_upstream explicitly (to error and timeout)`);
    for (const directive of nextUpstream) {
      for (const condition of directive.args) {
        // `non_idempotent` would resend a POST (a prediction, a token request) that a replica may have executed;
        // http_5xx would resend requests that reached a replica and were answered.
        assert.ok(['error', 'timeout', 'off'].includes(condition), `${lb.configPath}: proxy_next_upstream ${condition}: only connection errors may go to another replica`);
      }
    }
    const headers = new Map(all.filter((directive) => directive.name === 'proxy_set_header').map((directive) => [directive.args[0]!.toLowerCase(), directive.args[1]]));
    // The replicas see the name clients used (their metadata URLs come from ISSUER, not from the Host).
    assert.equal(headers.get('host'), '$http_host', `${lb.configPath}: pass the client's Host (proxy_set_header Host $http_host)`);
    assert.match(headers.get('x-forwarded-for') ?? '', /\$proxy_add_x_forwarded_for/, `${lb.configPath}: set X-Forwarded-For`);
    assert.equal(headers.get('x-forwarded-proto'), '$scheme', `${lb.configPath}: set X-Forwarded-Proto`);
    assert.ok(headers.has('x-forwarded-host'), `${lb.configPath}: set X-Forwarded-Host`);
    for (const timeout of ['proxy_connect_timeout', 'proxy_read_timeout']) {
      assert.ok(all.some((directive) => directive.name === timeout), `${lb.configPath}: set ${timeout} explicitly`);
    }
  });

  it('only the LB publishes ports, the ones it listens on, on host ports no other service takes', () => {
    const lb = loadBalancer();
    const published = publishedPorts(lb.service);
    assert.ok(published.length > 0, 'lb publishes no port');
    for (const { container } of published) assert.ok(lb.listeners.has(container), `lb publishes container port ${container}, where ${lb.configPath} does not listen`);
    for (const port of lb.listeners.keys()) assert.ok(published.some(({ container }) => container === port), `lb: ${lb.configPath} listens on ${port}, which lb does not publish`);
    for (const [name, service] of distributedServices) {
      if (name !== lb.name) assert.deepEqual(service.ports ?? [], [], `${name} publishes ports; in the distributed profile only the LB does`);
    }
    // `--profile distributed up` starts the default services too: their host ports must not collide.
    const owners = new Map<string, string>();
    for (const [name, service] of Object.entries(services)) {
      for (const { host } of publishedPorts(service)) {
        assert.ok(host, `${name} publishes a container port on a random host port; name it`);
        assert.ok(!owners.has(host), `${name} and ${owners.get(host)} both publish host port ${host}`);
        owners.set(host, name);
      }
    }
  });

  it('starts in an order that cannot deadlock: the LB after the auth-servers, not after the predictors’ readiness', () => {
    const lb = loadBalancer();
    const dependsOn = dependsOnOf(lb.service);
    for (const [name] of auths) assert.equal(dependsOn.get(name), 'service_healthy', `lb should wait for ${name} to be healthy`);
    for (const [name, service] of predictors) {
      assert.ok(dependsOn.has(name), `lb should start after ${name}`);
      // The predictors become ready once they have the signing keys, which they fetch through the LB.
      if (new URL(environmentOf(service)['ISSUER'] ?? '').hostname === lb.name) {
        assert.notEqual(dependsOn.get(name), 'service_healthy', `lb waits for ${name} to be healthy, but ${name} needs the LB to become ready`);
      }
      assert.ok(!dependsOnOf(service).has(lb.name), `${name} must not depend on lb, which starts after it`);
    }
  });
});

describe('Dockerfiles', () => {
  const dockerfilePaths = [...new Set(builtServices.map(([, service]) => dockerfilePathOf(service)))];

  it('every built service points to a Dockerfile that exists, with the repository root as context', () => {
    for (const [name, service] of builtServices) {
      assert.equal(posix.normalize(buildOf(service).context), '.', `${name}: the build context must be the repository root (workspaces need the root manifests)`);
      assert.ok(existsSync(root(dockerfilePathOf(service))), `${name}: ${dockerfilePathOf(service)} does not exist`);
    }
    assert.deepEqual(dockerfilePaths.sort(), ['auth-server/Dockerfile', 'caller/Dockerfile', 'predictor/Dockerfile', 'usage/Dockerfile']);
  });

  it('every COPY source exists in the repository and is not excluded by .dockerignore', () => {
    assert.ok(existsSync(root('.dockerignore')), '.dockerignore missing: the context would include node_modules and .git');
    for (const path of dockerfilePaths) {
      for (const instruction of dockerfile(path).filter((entry) => entry.keyword === 'COPY' || entry.keyword === 'ADD')) {
        const { flags, sources } = copyArguments(instruction.args);
        if (flags.some((flag) => flag.startsWith('--from='))) continue;
        assert.ok(sources.length > 0, `${path}: ${instruction.keyword} ${instruction.args} has no source`);
        for (const source of sources) {
          assert.ok(existsInRepository(source), `${path}: COPY source ${source} does not exist in the repository`);
          assert.ok(!dockerIgnored(source), `${path}: COPY source ${source} is excluded by .dockerignore`);
        }
      }
    }
  });

  it('keeps local state and dev credentials out of the build context', () => {
    for (const path of ['node_modules', 'dist', '.data', '.git', 'dev.env', 'predictor/node_modules', 'server.log']) {
      assert.ok(dockerIgnored(path), `.dockerignore should exclude ${path}`);
    }
    for (const path of ['package.json', 'package-lock.json', 'predictor/plans.json', 'predictor/src/model/iris-softmax.weights.json']) {
      assert.ok(!dockerIgnored(path), `.dockerignore must not exclude ${path}`);
    }
  });

  it('are multi-stage on Node 22, run as a non-root user, and not with NODE_ENV=production', () => {
    for (const path of dockerfilePaths) {
      const instructions = dockerfile(path);
      const froms = instructions.filter((instruction) => instruction.keyword === 'FROM');
      assert.ok(froms.length >= 2, `${path}: expected a build stage and a runtime stage`);
      for (const from of froms) assert.match(from.args, /^node:22-bookworm-slim\b/, `${path}: FROM ${from.args}`);
      const final = finalStage(instructions);
      const user = final.filter((instruction) => instruction.keyword === 'USER').at(-1);
      assert.ok(user, `${path}: the runtime stage sets no USER (it would run as root)`);
      assert.ok(!/^(root|0)(:|$)/.test(user.args), `${path}: USER ${user.args} is root`);
      const nodeEnv = final.filter((instruction) => instruction.keyword === 'ENV').flatMap((instruction) => envEntries(instruction.args)).find(([key]) => key === 'NODE_ENV');
      assert.ok(nodeEnv, `${path}: set NODE_ENV explicitly`);
      assert.notEqual(nodeEnv[1], 'production', `${path}: the dev compose runs dev credentials, which the servers refuse with NODE_ENV=production`);
      assert.ok(
        final.some((instruction) => instruction.keyword === 'COPY' && /--from=/.test(instruction.args) && /\bdist\b/.test(instruction.args)),
        `${path}: the runtime stage must copy dist/ from the build stage`,
      );
      const build = instructions.filter((instruction) => instruction.stage < final[0]!.stage && instruction.keyword === 'RUN').map((instruction) => instruction.args);
      assert.ok(build.some((run) => /npm ci\b/.test(run)), `${path}: the build stage must npm ci`);
      assert.ok(build.some((run) => /npm run build\b/.test(run)), `${path}: the build stage must npm run build`);
      assert.ok(build.some((run) => /npm (prune|ci)\b.*--omit=dev/.test(run)), `${path}: production dependencies only (npm prune --omit=dev)`);
    }
  });

  it('have no `# syntax=` parser directive (BuildKit would pull its frontend image: air-gapped builds fail)', () => {
    for (const path of dockerfilePaths) {
      assert.doesNotMatch(readFileSync(root(path), 'utf8'), /^\s*#\s*syntax\s*=/im, `${path}: remove the # syntax= line`);
    }
  });

  it('the runtime stage copies node_modules from a stage whose last install step drops the dev dependencies, and installs nothing itself', () => {
    for (const path of dockerfilePaths) {
      const instructions = dockerfile(path);
      const final = finalStage(instructions);
      const stageNames = new Map(instructions.filter((instruction) => instruction.keyword === 'FROM').map((from) => [/\bAS\s+(\S+)/i.exec(from.args)?.[1]?.toLowerCase() ?? String(from.stage), from.stage]));
      const copies = final.filter((instruction) => instruction.keyword === 'COPY' && copyArguments(instruction.args).sources.some((source) => /(^|\/)node_modules\/?$/.test(source)));
      assert.equal(copies.length, 1, `${path}: the runtime stage should copy node_modules once`);
      const from = copyArguments(copies[0]!.args).flags.find((flag) => flag.startsWith('--from='))?.slice('--from='.length).toLowerCase();
      const stage = from === undefined ? undefined : (stageNames.get(from) ?? Number(from));
      assert.ok(stage !== undefined && stage < final[0]!.stage, `${path}: node_modules must come from an earlier stage (--from=), not the build context`);
      const runs = instructions.filter((instruction) => instruction.stage === stage && instruction.keyword === 'RUN').map((instruction) => instruction.args);
      const installs = runs.flatMap((run) => run.split(/&&|;|\|\|/)).map((command) => command.trim()).filter((command) => /^npm (ci|install|i|prune)\b/.test(command));
      assert.match(installs.at(-1) ?? '', /--omit=dev\b/, `${path}: the stage that provides node_modules must end its installs with npm prune --omit=dev (or npm ci --omit=dev), not ${installs.at(-1) ?? 'nothing'}`);
      for (const run of final.filter((instruction) => instruction.keyword === 'RUN')) {
        assert.doesNotMatch(run.args, /\b(npm|npx|yarn|pnpm)\b/, `${path}: the runtime stage runs ${run.args}; it should get its node_modules ready-made`);
      }
    }
  });

  it('package-lock.json marks the build and test tooling dev-only, so the prune leaves it out of the images', () => {
    const lock = JSON.parse(readFileSync(root('package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
    for (const tool of ['tsx', 'esbuild', 'typescript', 'yaml', 'playwright-core']) {
      const entry = lock.packages[`node_modules/${tool}`];
      if (entry === undefined) continue;
      assert.equal(entry.dev, true, `${tool} is reachable from a production dependency (package-lock.json); the images would carry it`);
    }
  });

  it('CMD runs a bundle that the build script makes, from the code the test checks the service against', () => {
    /** The bundle's source must be in the folders whose variables and routes the other checks read. */
    const assertRunsItsCode = (where: string, bundle: string, code: ServiceCode) => {
      const source = ENTRIES.find((entry) => entry.name === bundle)!.source;
      assert.ok(code.sources.some((folder) => source.startsWith(`${folder}/`)), `${where} runs ${bundle} (${source}), outside ${code.sources.join(', ')}`);
    };
    for (const path of dockerfilePaths) {
      const cmd = finalStage(dockerfile(path)).filter((instruction) => instruction.keyword === 'CMD').at(-1);
      assert.ok(cmd, `${path}: no CMD`);
      const command = jsonForm(cmd.args);
      assert.ok(command, `${path}: CMD must be in JSON form (signals reach node, not a shell)`);
      const bundle = bundleRunBy(command);
      assert.ok(bundle && entryNames.has(bundle), `${path}: CMD ${cmd.args} runs no bundle of scripts/build-entries.mjs (${[...entryNames].join(', ')})`);
      const code = SERVICE_CODE[path.split('/')[0]!];
      assert.ok(code, `${path}: the test does not know its code; add it to SERVICE_CODE`);
      assertRunsItsCode(`${path}: CMD`, bundle, code);
    }
    for (const [name, service] of builtServices) {
      if (service.command === undefined) continue;
      const command = Array.isArray(service.command) ? service.command : service.command.split(/\s+/);
      const bundle = bundleRunBy(command);
      assert.ok(bundle && entryNames.has(bundle), `${name}: command ${command.join(' ')} runs no bundle of the build`);
      assertRunsItsCode(`${name}: command`, bundle, codeOf(name));
    }
  });

  it('sets in the image only variables the service reads, and PLANS_FILE where plans.json is copied', () => {
    for (const [name, service] of builtServices) {
      const path = dockerfilePathOf(service);
      const read = variablesReadBy(codeOf(name).sources);
      const set = finalStage(dockerfile(path))
        .filter((instruction) => instruction.keyword === 'ENV')
        .flatMap((instruction) => envEntries(instruction.args));
      for (const [variable] of set) assert.ok(ALWAYS_ALLOWED.has(variable) || read.has(variable), `${path}: ENV ${variable} is read by no code of ${name}`);
    }
    const instructions = dockerfile(dockerfilePathOf(services['predictor']!));
    const copy = finalStage(instructions).find((instruction) => instruction.keyword === 'COPY' && copyArguments(instruction.args).sources.includes('predictor/plans.json'));
    assert.ok(copy, 'predictor/Dockerfile must copy predictor/plans.json (the bundle cannot find it next to its sources)');
    const copiedTo = imagePath(instructions, copy, copyArguments(copy.args).destination);
    assert.equal(environmentOf(services['predictor']!)['PLANS_FILE'], copiedTo, 'PLANS_FILE in docker-compose.yml');
    for (const [name, service] of builtServices.filter(([name]) => kindOf(name) === 'predictor')) {
      const plansFile = environmentOf(service)['PLANS_FILE'];
      if (plansFile !== undefined) assert.equal(plansFile, copiedTo, `${name}: PLANS_FILE in docker-compose.yml`);
    }
  });
});

describe('the bundles (npm run build)', () => {
  /** Laid out like the images' /app: dist/ beside node_modules/ (production dependencies only), and nothing else of the repository. */
  let imageRoot = '';
  let outdir = '';
  let build: { code: number | null; output: string };
  let prune: { code: number | null; output: string };

  /** Runs node in imageRoot (the images' WORKDIR); `killAfterMs` stops a process that is still running fine. */
  const run = (args: string[], env: Record<string, string> = {}, killAfterMs = 10_000) =>
    new Promise<{ code: number | null; stdout: string; stderr: string; killed: boolean }>((resolve, reject) => {
      const child = spawn(process.execPath, args, { cwd: imageRoot, env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let killed = false;
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk));
      const timer = setTimeout(() => {
        killed = true;
        child.kill('SIGKILL');
      }, killAfterMs);
      child.once('error', reject);
      child.once('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr, killed });
      });
    });

  /** Runs a command to its end, with its output. */
  const complete = (command: string, args: string[], cwd: string) =>
    new Promise<{ code: number | null; output: string }>((resolve, reject) => {
      const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk));
      child.once('error', reject);
      child.once('close', (code) => resolve({ code, output }));
    });

  before(async () => {
    // Outside the repository: bare imports resolve as /app/dist resolves them from
    // /app/node_modules, and no source file or dev.env is near. node_modules is the
    // repository's, pruned as the Dockerfiles' build stage prunes it (npm prune
    // --omit=dev, from the manifests and package-lock.json; offline: it only removes).
    imageRoot = await mkdtemp(join(tmpdir(), 'm2m-image-'));
    outdir = join(imageRoot, 'dist');
    const staging = await mkdtemp(join(tmpdir(), 'm2m-prune-'));
    const { workspaces } = JSON.parse(readFileSync(root('package.json'), 'utf8')) as { workspaces: string[] };
    for (const manifest of ['package.json', 'package-lock.json', ...workspaces.map((workspace) => `${workspace}/package.json`)]) {
      await cp(root(manifest), join(staging, manifest));
    }
    await cp(root('node_modules'), join(staging, 'node_modules'), { recursive: true, verbatimSymlinks: true });
    prune = await complete('npm', ['prune', '--omit=dev', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], staging);
    await rename(join(staging, 'node_modules'), join(imageRoot, 'node_modules'));
    await rm(staging, { recursive: true, force: true });
    build = await complete(process.execPath, ['scripts/build.mjs', '--outdir', outdir], REPOSITORY_ROOT);
  });

  after(async () => {
    if (imageRoot) await rm(imageRoot, { recursive: true, force: true });
  });

  it('builds every entry point whose source exists', () => {
    assert.equal(build.code, 0, `node scripts/build.mjs failed:\n${build.output}`);
    for (const entry of ENTRIES) {
      if (!existsSync(root(entry.source))) continue;
      assert.ok(existsSync(join(outdir, `${entry.name}.js`)), `${entry.name}.js missing after the build`);
      assert.ok(existsSync(join(outdir, `${entry.name}.js.map`)), `${entry.name}.js.map missing (sourcemaps)`);
    }
    assert.deepEqual(JSON.parse(readFileSync(join(outdir, 'package.json'), 'utf8')), { type: 'module' });
  });

  it('the images’ node_modules (npm prune --omit=dev) holds no build or test tooling', () => {
    assert.equal(prune.code, 0, `npm prune --omit=dev failed:\n${prune.output}`);
    for (const tool of ['tsx', 'esbuild', 'typescript', 'playwright-core']) {
      assert.ok(!existsSync(join(imageRoot, 'node_modules', tool)), `${tool} survives npm prune --omit=dev: a production dependency needs it`);
    }
    assert.ok(existsSync(join(imageRoot, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')), 'the better-sqlite3 addon built by npm ci is kept');
  });

  it('every package the bundles import is a production dependency, present in the images’ node_modules', async () => {
    // esbuild lists each bundle's external imports (the bundles' own chunks are followed).
    const esbuild = await import('esbuild');
    const entryPoints = readdirSync(outdir).filter((file) => file.endsWith('.js')).map((file) => join(outdir, file));
    const result = await esbuild.build({ entryPoints, bundle: true, write: false, metafile: true, packages: 'external', platform: 'node', format: 'esm', outdir: join(imageRoot, 'analysis'), logLevel: 'silent' });
    const imported = new Set(
      Object.values(result.metafile.inputs)
        .flatMap((input) => input.imports)
        .filter((entry) => entry.external && !entry.path.startsWith('node:') && !builtinModules.includes(entry.path.split('/')[0]!))
        .map((entry) => entry.path.split('/').slice(0, entry.path.startsWith('@') ? 2 : 1).join('/')),
    );
    assert.ok(imported.has('oidc-provider') && imported.has('better-sqlite3'), `expected the servers' packages among ${[...imported].join(', ')}`);
    const missing = [...imported].filter((name) => !existsSync(join(imageRoot, 'node_modules', name, 'package.json')));
    assert.deepEqual(missing, [], `imported by the bundles but not production dependencies (dev-only, pruned from the images): ${missing.join(', ')}`);
  });

  it('bundles the workspaces and leaves third-party packages external', () => {
    const bundles = readdirSync(outdir, { recursive: true, encoding: 'utf8' }).filter((file) => file.endsWith('.js'));
    const text = bundles.map((file) => readFileSync(join(outdir, file), 'utf8')).join('\n');
    assert.doesNotMatch(text, /from ["'](?:@m2m\/[\w-]+|caller)["']/, 'a workspace package was left external (it exports TypeScript, which node cannot run)');
    assert.match(text, /from ["']hono["']/, 'hono should stay external');
    assert.match(text, /from ["']jose["']/, 'jose should stay external');
  });

  it('the bundled predictor loads its dependencies and refuses a bad port with one line', async () => {
    const { code, stderr } = await run(['dist/predictor.js'], { PREDICTOR_PORT: '99999' });
    assert.equal(code, 2, stderr);
    assert.match(stderr, /^predictor: PREDICTOR_PORT [^\n]*\n$/);
  });

  it('the bundled auth-server loads and refuses a bad port with one line', async (t) => {
    if (!existsSync(join(outdir, 'auth-server.js'))) return t.skip('auth-server.js was not built');
    const { code, stderr } = await run(['dist/auth-server.js'], { AUTH_PORT: '99999' });
    assert.equal(code, 2, stderr);
    assert.match(stderr, /^auth-server: AUTH_PORT [^\n]*\n$/);
  });

  it('the bundled usage-ledger loads its dependencies (NATS, pg, SQLite) and refuses a bad port with one line', async () => {
    const { code, stderr } = await run(['dist/usage-ledger.js'], { USAGE_ADMIN_PORT: '99999' });
    assert.equal(code, 2, stderr);
    assert.match(stderr, /^usage-ledger: USAGE_ADMIN_PORT [^\n]*\n$/);
  });

  it('the bundled usage CLI prints its help', async () => {
    const { code, stdout, stderr } = await run(['dist/usage.js', '--help']);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^usage: /);
  });

  it('the bundled apikey CLI opens its SQLite store (native addon) and prints its usage', async () => {
    const data = await mkdtemp(join(imageRoot, 'data-'));
    const { code, stderr } = await run(['dist/apikey.js'], { PREDICTOR_DATA_DIR: data });
    assert.equal(code, 2, stderr);
    assert.match(stderr, /^usage: /);
    assert.ok(existsSync(join(data, 'api-keys.db')));
  });

  it('the bundled keys-generate loads and prints its usage without a path', async (t) => {
    if (!existsSync(join(outdir, 'keys-generate.js'))) return t.skip('keys-generate.js was not built');
    const { code, stderr } = await run(['dist/keys-generate.js']);
    assert.equal(code, 2, stderr);
    assert.match(stderr, /^usage: /);
  });

  it('the bundled caller prints its usage with --help', async () => {
    const { code, stdout, stderr } = await run(['dist/caller.js', '--help']);
    assert.equal(code, 0, stderr);
    assert.match(stdout + stderr, /usage: caller/);
  });

  it('the bundled demo starts without the repository around it (no sources, no dev.env file)', async () => {
    // As the compose caller runs it: external mode, credentials from the environment
    // (env_file), services that do not answer here. Whatever the demo then reports, it
    // must not die loading a file or module that only exists in a checkout.
    const { stdout, stderr } = await run(
      ['dist/demo.js'],
      { ...devEnv, NODE_ENV: 'development', DEMO_TARGET: 'external', ISSUER: 'http://127.0.0.1:9', PREDICTOR_URL: 'http://127.0.0.1:9', PREDICTOR_AUDIENCE: 'http://predictor:8080', ADMIN_URL: 'http://127.0.0.1:9', ALLOW_INSECURE_HTTP: 'true' },
      3_000,
    );
    assert.doesNotMatch(stdout + stderr, /ENOENT|ERR_MODULE_NOT_FOUND|Cannot find (?:module|package)/, `the demo bundle failed to load:\n${stderr.slice(0, 600)}`);
  });
});
