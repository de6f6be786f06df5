import { generateSigningKey, type SigningKey, type SigningKeyFile } from './signing-key-file.js';

export interface KeyRingOptions {
  /**
   * How long (in milliseconds) a key must have been published before it may sign: the
   * resource servers' JWKS cache age, so every verifier knows the key before it sees
   * a token signed with it.
   */
  propagationMs: number;
  /** Access-token lifetime plus clock tolerance (in milliseconds): how long a previous key stays published. */
  tokenLifetimeMs: number;
  now?: () => Date;
}

export class RotationTooEarly extends Error {
  override name = 'RotationTooEarly';

  constructor(readonly readyAt: Date) {
    super(`the next key has not been published for the propagation period yet; rotate after ${readyAt.toISOString()} (or force it)`);
  }
}

export class UnknownKey extends Error {
  override name = 'UnknownKey';
}

/**
 * The signing-key lifecycle: next (published, not signing) → current (signing) →
 * previous (published until every token it signed has expired) → removed. Methods
 * return a new file; the caller persists it and rebuilds the provider.
 */
export class KeyRing {
  readonly #options: KeyRingOptions;
  readonly #now: () => Date;

  constructor(
    readonly file: SigningKeyFile,
    options: KeyRingOptions,
  ) {
    this.#options = options;
    this.#now = options.now ?? (() => new Date());
  }

  get current(): SigningKey {
    return this.file.keys.find((key) => key.state === 'current')!;
  }

  get next(): SigningKey | undefined {
    return this.file.keys.find((key) => key.state === 'next');
  }

  /** The keys in the JWKS: current first, then next and unexpired previous keys. */
  published(): SigningKey[] {
    const now = this.#now().getTime();
    const live = this.file.keys.filter((key) => key.state !== 'previous' || !key.removeAfter || Date.parse(key.removeAfter) > now);
    return [...live.filter((key) => key.state === 'current'), ...live.filter((key) => key.state !== 'current')];
  }

  /** Drops previous keys past their removal time; undefined when nothing changed. */
  prune(): KeyRing | undefined {
    const published = this.published();
    if (published.length === this.file.keys.length) return undefined;
    return this.#with(published);
  }

  /** Promotes next to current, keeps the old current as previous, stages a new next. */
  async rotate(options: { force?: boolean } = {}): Promise<KeyRing> {
    const now = this.#now();
    const next = this.next;
    if (next && !options.force) {
      const readyAt = new Date(Date.parse(next.publishedAt) + this.#options.propagationMs);
      if (readyAt > now) throw new RotationTooEarly(readyAt);
    }
    const promoted = next ?? (await generateSigningKey('next', now));
    const keys = this.published().map((key): SigningKey => {
      if (key.kid === promoted.kid) return { ...key, state: 'current', activatedAt: now.toISOString() };
      if (key.state === 'current') return { ...key, state: 'previous', removeAfter: new Date(now.getTime() + this.#options.tokenLifetimeMs).toISOString() };
      return key;
    });
    if (!next) keys.push({ ...promoted, state: 'current', activatedAt: now.toISOString() });
    keys.push(await generateSigningKey('next', now));
    return this.#with(keys);
  }

  /**
   * A compromise: the key leaves the JWKS at once. Revoking the current key promotes
   * next at once (published already, so verifiers that refreshed know it) and stages a
   * new next.
   */
  async revoke(kid: string): Promise<KeyRing> {
    const key = this.file.keys.find((candidate) => candidate.kid === kid);
    if (!key) throw new UnknownKey(`no signing key ${kid}`);
    const now = this.#now();
    let keys = this.file.keys.filter((candidate) => candidate.kid !== kid);
    if (key.state === 'current') {
      const next = keys.find((candidate) => candidate.state === 'next');
      if (next) keys = keys.map((candidate) => (candidate === next ? { ...candidate, state: 'current', activatedAt: now.toISOString() } : candidate));
      else keys.push(await generateSigningKey('current', now));
    }
    if (!keys.some((candidate) => candidate.state === 'next')) keys.push(await generateSigningKey('next', now));
    return this.#with(keys);
  }

  /** The same lifecycle over keys another replica wrote. */
  adopt(file: SigningKeyFile): KeyRing {
    return new KeyRing(file, this.#options);
  }

  #with(keys: SigningKey[]): KeyRing {
    return new KeyRing({ ...this.file, keys }, this.#options);
  }
}
