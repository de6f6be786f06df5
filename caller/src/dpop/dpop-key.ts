import { createHash, randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JWK } from 'jose';

/**
 * The `alg`s a DPoP key may have: asymmetric only (RFC 9449 section 4.2), those Node's
 * WebCrypto signs with. Ed25519 keys use the fully-specified `Ed25519` (RFC 9864), as
 * openid-client does for the token requests' proofs; a JWK saying `EdDSA` is read as that.
 * The servers here accept ES256, EdDSA, Ed25519 and PS256.
 */
export const DPOP_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'Ed25519'] as const;
export type DPoPAlgorithm = (typeof DPOP_ALGORITHMS)[number];

/** What a generated key uses unless told otherwise. */
export const DEFAULT_DPOP_ALGORITHM: DPoPAlgorithm = 'ES256';

/** A DPoP key pair that cannot be used: a file without a private key, an unknown `alg`. */
export class DPoPKeyError extends Error {
  override name = 'DPoPKeyError';
}

export interface DPoPKeyOptions {
  /** Wall-clock milliseconds since the epoch, for the proofs' `iat`. Default `Date.now`. */
  wallNow?: () => number;
  /** A proof's `jti`: unique per proof (the servers refuse one seen before). Default: a random UUID. */
  newJti?: () => string;
}

/** The request a proof is made for (RFC 9449 section 4.2). */
export interface ProofRequest {
  /** `htm`: the HTTP method. */
  method: string;
  /** The request's URL; `htu` is it without query and fragment. */
  url: string | URL;
  /** The access token sent with the request (`ath` = its hash); absent for a token request. */
  accessToken?: string | undefined;
}

/** How many origins' nonces are remembered (least recently used dropped first), as openid-client's handle does. */
const MAX_REMEMBERED_NONCES = 100;

/** Members only a private (or symmetric) JWK has (RFC 7518 section 6). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

/**
 * The key pair one caller proves possession of (RFC 9449): openid-client signs the token
 * requests' proofs with `keyPair`, and `proof()` makes the proof of every request to the
 * predictor. Generated keys have a non-extractable private key. It also remembers the latest
 * server nonce per origin (`DPoP-Nonce`), which every later proof for that origin carries.
 */
export class DPoPKey {
  readonly #wallNow: () => number;
  readonly #newJti: () => string;
  /** Origin → the nonce it sent last. */
  readonly #nonces = new Map<string, string>();

  private constructor(
    readonly alg: DPoPAlgorithm,
    /** For openid-client's `getDPoPHandle`: the public key must be extractable (it goes into every proof), the private one need not. */
    readonly keyPair: { privateKey: CryptoKey; publicKey: CryptoKey },
    /** The public JWK in every proof's header. */
    readonly publicJwk: JWK,
    /** RFC 7638 thumbprint: the `cnf.jkt` of the tokens bound to this key. */
    readonly thumbprint: string,
    options: DPoPKeyOptions,
  ) {
    this.#wallNow = options.wallNow ?? Date.now;
    this.#newJti = options.newJti ?? randomUUID;
  }

  /** A new key pair whose private key cannot be exported (`generateKeyPair`, WebCrypto). */
  static async generate(alg: string = DEFAULT_DPOP_ALGORITHM, options: DPoPKeyOptions = {}): Promise<DPoPKey> {
    const algorithm = checkAlgorithm(alg === 'EdDSA' ? 'Ed25519' : alg, 'a generated DPoP key');
    const { privateKey, publicKey } = await generateKeyPair(algorithm, { extractable: false });
    return DPoPKey.#create(algorithm, privateKey, publicKey, options);
  }

  /**
   * A key from a private JWK (`kty` EC, OKP or RSA with its private members); its `alg` is the
   * JWK's, else ES256/ES384/ES512 by curve, Ed25519 for OKP, PS256 for RSA. `source` names the
   * key in errors (a file path).
   */
  static async fromJwk(jwk: JWK, options: DPoPKeyOptions & { source?: string } = {}): Promise<DPoPKey> {
    const source = options.source ?? 'the DPoP key';
    if (typeof jwk !== 'object' || jwk === null || typeof jwk.kty !== 'string') throw new DPoPKeyError(`${source} is not a JSON Web Key (no "kty")`);
    if (jwk.kty === 'oct') throw new DPoPKeyError(`${source} is a symmetric key: DPoP needs an asymmetric key pair`);
    if (typeof jwk.d !== 'string') throw new DPoPKeyError(`${source} has no private key ("d"): DPoP proofs are signed with it`);
    const algorithm = checkAlgorithm(jwk.alg === 'EdDSA' ? 'Ed25519' : (jwk.alg ?? defaultAlgorithm(jwk)), source);
    const publicJwk = Object.fromEntries(Object.entries(jwk).filter(([member]) => !(PRIVATE_MEMBERS as readonly string[]).includes(member) && member !== 'key_ops' && member !== 'ext'));
    let privateKey: CryptoKey;
    let publicKey: CryptoKey;
    try {
      privateKey = (await importJWK({ ...jwk, key_ops: undefined, ext: undefined }, algorithm, { extractable: false })) as CryptoKey;
      publicKey = (await importJWK(publicJwk, algorithm, { extractable: true })) as CryptoKey;
    } catch (error) {
      throw new DPoPKeyError(`${source} cannot be used as a ${algorithm} key: ${(error as Error).message}`, { cause: error });
    }
    return DPoPKey.#create(algorithm, privateKey, publicKey, options);
  }

  static async #create(alg: DPoPAlgorithm, privateKey: CryptoKey, publicKey: CryptoKey, options: DPoPKeyOptions): Promise<DPoPKey> {
    const { kty, crv, x, y, n, e } = await exportJWK(publicKey);
    const publicJwk = Object.fromEntries(Object.entries({ kty, crv, x, y, n, e }).filter(([, value]) => value !== undefined)) as JWK;
    return new DPoPKey(alg, { privateKey, publicKey }, publicJwk, await calculateJwkThumbprint(publicJwk), options);
  }

  /**
   * A new proof for one request: `typ` dpop+jwt, this key's `alg` and public `jwk`; `htm`, `htu`
   * (no query or fragment), `iat` now, a fresh `jti`, `ath` with a token, and the origin's latest
   * nonce if it sent one. Make one per request, retries included: a proof is accepted once.
   */
  async proof(request: ProofRequest): Promise<string> {
    const url = new URL(request.url);
    const nonce = this.nonceFor(url);
    const claims = {
      htm: request.method.toUpperCase(),
      htu: `${url.origin}${url.pathname}`,
      iat: Math.floor(this.#wallNow() / 1000),
      jti: this.#newJti(),
      ...(request.accessToken === undefined ? {} : { ath: accessTokenHash(request.accessToken) }),
      ...(nonce === undefined ? {} : { nonce }),
    };
    return new SignJWT(claims).setProtectedHeader({ alg: this.alg, typ: 'dpop+jwt', jwk: this.publicJwk }).sign(this.keyPair.privateKey);
  }

  /** The latest nonce `url`'s origin sent, if any. */
  nonceFor(url: string | URL): string | undefined {
    return this.#nonces.get(new URL(url).origin);
  }

  /** Keeps the `DPoP-Nonce` of an answer from `url`'s origin (RFC 9449 section 8.2: any answer may carry a new one). */
  rememberNonce(url: string | URL, headers: Headers): void {
    const nonce = headers.get('dpop-nonce');
    if (!nonce) return;
    const { origin } = new URL(url);
    this.#nonces.delete(origin);
    if (this.#nonces.size >= MAX_REMEMBERED_NONCES) this.#nonces.delete(this.#nonces.keys().next().value!);
    this.#nonces.set(origin, nonce);
  }
}

/** base64url(SHA-256(ASCII(token))): a proof's `ath` (RFC 9449 section 4.2). */
export function accessTokenHash(token: string): string {
  return createHash('sha256').update(token, 'ascii').digest('base64url');
}

function checkAlgorithm(alg: string, what: string): DPoPAlgorithm {
  if ((DPOP_ALGORITHMS as readonly string[]).includes(alg)) return alg as DPoPAlgorithm;
  throw new DPoPKeyError(`${what}: alg "${alg}" is not one of ${DPOP_ALGORITHMS.join(', ')} (asymmetric)`);
}

function defaultAlgorithm(jwk: JWK): string {
  if (jwk.kty === 'EC') return { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' }[jwk.crv ?? ''] ?? `EC ${jwk.crv ?? '(no crv)'}`;
  if (jwk.kty === 'OKP') return jwk.crv === 'Ed25519' ? 'Ed25519' : `OKP ${jwk.crv ?? '(no crv)'}`;
  if (jwk.kty === 'RSA') return 'PS256';
  return String(jwk.kty);
}
