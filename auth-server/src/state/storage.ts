import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { StoredClient } from '../clients/registry.js';
import { writeSigningKeyFile, type SigningKeyFile } from '../keys/signing-key-file.js';

/**
 * Where the auth-server keeps what every replica must agree on: the signing keys and the
 * client registrations. One process uses files in its data directory; replicas share
 * PostgreSQL (postgres-state.ts).
 */
export interface AuthStateStorage {
  readonly kind: 'files' | 'postgres';
  /** Persists the keys; rejects with StateConflict when another replica changed them since this one last read them. */
  saveKeys(file: SigningKeyFile): Promise<void>;
  /** Persists the registrations; rejects with StateConflict like saveKeys. */
  saveClients(clients: StoredClient[]): Promise<void>;
  /** What other replicas changed since the last read or save; an absent part is unchanged. */
  pullChanges(): Promise<{ keys?: SigningKeyFile; clients?: StoredClient[] }>;
  close(): Promise<void>;
}

/** Another replica changed the state between this replica's read and its write. */
export class StateConflict extends Error {
  override name = 'StateConflict';
}

interface ClientsFile {
  version: 1;
  clients: StoredClient[];
}

export class StateFileError extends Error {
  override name = 'StateFileError';
}

/** A single auth-server: keys and registrations in files of its data directory, written atomically. */
export class FileStateStorage implements AuthStateStorage {
  readonly kind = 'files';

  constructor(private readonly paths: { keys: string; clients: string }) {}

  saveKeys(file: SigningKeyFile): Promise<void> {
    return writeSigningKeyFile(this.paths.keys, file);
  }

  saveClients(clients: StoredClient[]): Promise<void> {
    return writeClientsFile(this.paths.clients, clients);
  }

  // Nobody else writes these files.
  async pullChanges(): Promise<Record<string, never>> {
    return {};
  }

  async close(): Promise<void> {}
}

/** The registrations file, or undefined on first start. */
export async function readClientsFile(path: string): Promise<StoredClient[] | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const file = JSON.parse(text) as ClientsFile;
  if (file.version !== 1 || !Array.isArray(file.clients)) throw new StateFileError(`${path} is not a clients file (version 1)`);
  return file.clients;
}

/** Atomic write (temp file + rename), mode 0600. */
export async function writeClientsFile(path: string, clients: StoredClient[]): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temporary = `${path}.${process.pid}.tmp`;
  const file: ClientsFile = { version: 1, clients };
  await writeFile(temporary, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  await chmod(temporary, 0o600);
  await rename(temporary, path);
}
