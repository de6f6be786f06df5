/** A bad configuration value: the message is one line that names the variable. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

export type Env = Readonly<Record<string, string | undefined>>;

/** A schema or table name that may be spliced into SQL (identifiers cannot be bound): lower case, at most 63 characters. */
export const SQL_IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/** Reads typed values from an environment; every reader names the variable in its error. */
export class EnvReader {
  readonly #env: Env;

  constructor(env: Env) {
    this.#env = env;
  }

  string(name: string, fallback: string): string;
  string(name: string): string | undefined;
  string(name: string, fallback?: string): string | undefined {
    const value = this.#env[name];
    return value === undefined || value === '' ? fallback : value;
  }

  integer(name: string, fallback: number, range: { min: number; max: number }): number {
    const raw = this.string(name);
    if (raw === undefined) return fallback;
    const value = /^-?\d+$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isSafeInteger(value) || value < range.min || value > range.max) {
      throw new ConfigError(`${name} must be an integer from ${range.min} to ${range.max}, got "${raw}"`);
    }
    return value;
  }

  port(name: string, fallback: number): number {
    return this.integer(name, fallback, { min: 0, max: 65535 });
  }

  url(name: string, fallback: string): string {
    const raw = this.string(name, fallback);
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new ConfigError(`${name} must be an absolute URL, got "${raw}"`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ConfigError(`${name} must be an http(s) URL, got "${raw}"`);
    }
    if (url.hash || url.search) throw new ConfigError(`${name} must not have a query or fragment, got "${raw}"`);
    return raw.replace(/\/+$/, '');
  }

  /**
   * The URL of a database or cache (e.g. `postgres:`, `redis:`), or undefined when unset. It may
   * carry a password, so an error shows only the scheme, never the value.
   */
  serviceUrl(name: string, protocols: readonly string[]): string | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    let protocol: string;
    try {
      protocol = new URL(raw).protocol;
    } catch {
      throw new ConfigError(`${name} must be a URL (${protocols.map((p) => `${p}//…`).join(' or ')})`);
    }
    if (!protocols.includes(protocol)) throw new ConfigError(`${name} must be a ${protocols.join(' or ')} URL, got a ${protocol} one`);
    return raw;
  }

  /** A plain SQL identifier (lower case), safe to quote into statements. */
  identifier(name: string, fallback: string): string {
    const raw = this.string(name, fallback);
    if (!SQL_IDENTIFIER.test(raw)) throw new ConfigError(`${name} must be a lower-case SQL identifier (letters, digits, _), got "${raw}"`);
    return raw;
  }

  oneOf<T extends string>(name: string, fallback: T, allowed: readonly T[]): T {
    const raw = this.string(name, fallback);
    if (!(allowed as readonly string[]).includes(raw)) {
      throw new ConfigError(`${name} must be one of ${allowed.join(', ')}, got "${raw}"`);
    }
    return raw as T;
  }

  /**
   * ADMIN_TOKEN: the bearer token of an admin API, undefined when unset (the API is off). At
   * least 32 characters, and never dev.env's under NODE_ENV=production.
   */
  adminToken(name = 'ADMIN_TOKEN'): string | undefined {
    const token = this.string(name);
    if (token !== undefined && token.length < 32) throw new ConfigError(`${name} must be at least 32 characters`);
    if (this.production && token?.startsWith('dev-')) throw new ConfigError(`${name} is the dev credential (dev.env); refusing to start with NODE_ENV=production`);
    return token;
  }

  get production(): boolean {
    return this.#env['NODE_ENV'] === 'production';
  }
}
