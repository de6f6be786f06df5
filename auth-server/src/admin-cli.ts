import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, parseEnv } from 'node:util';
import { existsSync, readFileSync } from 'node:fs';
import { ConfigError, EnvReader } from '@m2m/common';
import { AdminClient, AdminRequestError } from './admin/admin-client.js';

const USAGE = `usage: npm run admin -- <command>
  keys list                                   the signing keys and their states
  keys rotate [--force]                       next → current → previous; refused (409) until next
                                              has been published for KEY_PROPAGATION_SECONDS
  keys revoke <kid>                           remove a key from the JWKS at once (compromise)
  clients list
  clients add <id> --scopes <a,b> --plan <p> [--auth-method client_secret_basic|client_secret_post|private_key_jwt]
              [--jwks <public-jwks.json>] [--secret-file <path>]
  clients rotate-secret <id> [--overlap <seconds, default 300>] [--secret-file <path>]
  clients retire-secret <id>                  end the overlap: only the newest secret works
  clients set-scopes <id> <a,b>
  clients set-plan <id> <plan>
  clients set-jwks <id> <public-jwks.json>    rotate a private_key_jwt client's keys
  clients disable <id> | clients enable <id>
  stats                                       token requests, tokens issued, JWKS requests
environment: ADMIN_URL (default http://127.0.0.1:9001), ADMIN_TOKEN (default: dev.env's, outside production)
New secrets are printed once on stdout, or written to --secret-file (mode 0600).`;

const DEV_ENV_FILE = fileURLToPath(new URL('../../dev.env', import.meta.url));

function adminToken(read: EnvReader, env: NodeJS.ProcessEnv): string {
  const token = read.string('ADMIN_TOKEN');
  if (token) return token;
  const devEnv = [join(process.cwd(), 'dev.env'), DEV_ENV_FILE].find((path) => existsSync(path));
  if (env['NODE_ENV'] !== 'production' && devEnv) {
    const value = parseEnv(readFileSync(devEnv, 'utf8'))['ADMIN_TOKEN'];
    if (value) return value;
  }
  throw new ConfigError('ADMIN_TOKEN is required');
}

async function readJwks(path: string | undefined): Promise<unknown> {
  if (!path) throw new ConfigError('a JWKS file is required');
  return JSON.parse(await readFile(path, 'utf8'));
}

async function revealSecret(secret: string, file: string | undefined): Promise<void> {
  if (!file) {
    process.stdout.write(`${secret}\n`);
    return;
  }
  await writeFile(file, `${secret}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
  process.stderr.write(`secret written to ${file}\n`);
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      force: { type: 'boolean', default: false },
      scopes: { type: 'string' },
      plan: { type: 'string' },
      'auth-method': { type: 'string' },
      jwks: { type: 'string' },
      overlap: { type: 'string' },
      'secret-file': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  const read = new EnvReader(process.env);
  const admin = new AdminClient(read.url('ADMIN_URL', 'http://127.0.0.1:9001'), adminToken(read, process.env));
  const print = (value: unknown) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  const [area, command, id, argument] = positionals;
  const need = (value: string | undefined, what: string) => {
    if (!value) throw new ConfigError(`${area} ${command} needs ${what}`);
    return value;
  };
  switch (`${area} ${command ?? ''}`.trim()) {
    case 'keys list':
      print(await admin.listKeys());
      return 0;
    case 'keys rotate':
      print(await admin.rotateKeys({ force: values.force }));
      return 0;
    case 'keys revoke':
      print(await admin.revokeKey(need(id, 'a key id')));
      return 0;
    case 'clients list':
      print(await admin.listClients());
      return 0;
    case 'clients add': {
      const { client, client_secret: secret } = await admin.registerClient({
        client_id: need(id, 'a client id'),
        scopes: need(values.scopes, '--scopes').split(','),
        plan: need(values.plan, '--plan'),
        ...(values['auth-method'] ? { auth_method: values['auth-method'] } : {}),
        ...(values.jwks ? { jwks: await readJwks(values.jwks) } : {}),
      });
      process.stderr.write(`registered ${client.client_id}\n`);
      if (secret) await revealSecret(secret, values['secret-file']);
      return 0;
    }
    case 'clients rotate-secret': {
      const { client_secret: secret, previous_valid_until: until } = await admin.rotateClientSecret(need(id, 'a client id'), Number(values.overlap ?? 300));
      process.stderr.write(`rotated the secret of ${id}; the previous one works until ${until}\n`);
      await revealSecret(secret, values['secret-file']);
      return 0;
    }
    case 'clients retire-secret':
      print(await admin.retirePreviousSecret(need(id, 'a client id')));
      return 0;
    case 'clients set-scopes':
      print(await admin.updateClient(need(id, 'a client id'), { scopes: need(argument, 'scopes').split(',') }));
      return 0;
    case 'clients set-plan':
      print(await admin.updateClient(need(id, 'a client id'), { plan: need(argument, 'a plan') }));
      return 0;
    case 'clients set-jwks':
      print(await admin.updateClient(need(id, 'a client id'), { jwks: await readJwks(argument) }));
      return 0;
    case 'clients disable':
    case 'clients enable':
      print(await admin.updateClient(need(id, 'a client id'), { disabled: command === 'disable' }));
      return 0;
    case 'stats':
      print(await admin.stats());
      return 0;
    default:
      process.stderr.write(`admin: unknown command "${positionals.join(' ')}"\n\n${USAGE}\n`);
      return 2;
  }
}

main().then(
  (code) => (process.exitCode = code),
  (error: unknown) => {
    const known = error instanceof ConfigError || error instanceof AdminRequestError || error instanceof SyntaxError;
    process.stderr.write(`admin: ${known ? (error as Error).message : String((error as Error)?.stack ?? error)}\n`);
    process.exitCode = error instanceof AdminRequestError && error.status === 0 ? 7 : 2;
  },
);
