import { createHash } from 'node:crypto';
import { calculateJwkThumbprint, decodeProtectedHeader, EmbeddedJWK, errors, jwtVerify, type JWK, type JWTPayload } from 'jose';
import { HttpProblem, InvalidDpopProof, InvalidToken, StoreUnavailable, UseDpopNonce } from '../../http/problems.js';
import type { DpopNonces } from './nonces.js';
import { proofReplayKey, ReplayCacheFull, type ProofReplayCache } from './replay-cache.js';

export interface DpopProofVerifierOptions {
  /** The `alg`s a proof may be signed with: asymmetric only (the config refuses others). */
  algorithms: readonly string[];
  /**
   * The predictor's public URL, as clients reach it (PREDICTOR_PUBLIC_URL): `htu` must be
   * it plus the request's path. Never the request's Host or X-Forwarded-* (see `expectedHtu`).
   */
  publicUrl: string;
  /** How old (in seconds) a proof's `iat` may be. Default 60. */
  maxAgeSeconds?: number;
  /** Clock skew (in seconds) allowed on `iat`, either way. */
  clockToleranceSeconds: number;
  /** Where accepted proofs' `jti`s are kept until they are too old anyway. */
  replayCache: ProofReplayCache;
  /** Server-provided nonces; undefined: none required (RFC 9449 section 9 makes them optional). */
  nonces?: DpopNonces | undefined;
  /** Milliseconds since the epoch. Default `Date.now`. */
  now?: () => number;
}

/** The request a proof must fit. */
export interface DpopProofRequest {
  /** The `DPoP` header's value. */
  proof: string;
  method: string;
  /** The request's path, without query (as the router saw it). */
  path: string;
  /** The access token of `Authorization: DPoP <token>`: the proof's `ath` is its hash. */
  accessToken: string;
  /** The token's `cnf.jkt`: the thumbprint the proof's key must have. */
  boundThumbprint: string;
}

export interface VerifiedProof {
  /** RFC 7638 thumbprint of the proof's key. */
  thumbprint: string;
  jti: string;
  /** A nonce to hand to the client (`DPoP-Nonce`) because it used another one; undefined: none. */
  nextNonce?: string | undefined;
}

export type DpopProofVerifier = (request: DpopProofRequest) => Promise<VerifiedProof>;

/** Members that only a private (or symmetric) JWK has (RFC 7518 section 6). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

/** base64url(SHA-256(ASCII(access token))): RFC 9449 section 4.2, `ath`. */
export const accessTokenHash = (token: string) => createHash('sha256').update(token, 'ascii').digest('base64url');

/**
 * The `htu` a proof for `path` must carry: the configured public URL (scheme, host, port and
 * any path prefix a proxy strips) plus the path. Not from the request's Host or
 * X-Forwarded-Host: behind a proxy those name the proxy's upstream, and trusting them would let
 * whoever sends the request choose the URL a proof is checked against, so a proof made for
 * another server accepting the same key (captured there) would be accepted here.
 */
export function expectedHtu(publicUrl: string, path: string): string {
  const base = new URL(publicUrl);
  return normalizeHtu(new URL(`${base.pathname.replace(/\/+$/, '')}${path}`, base.origin).href)!;
}

/**
 * RFC 9449 section 4.3 (check 9) with the normalisation it recommends (RFC 3986 sections
 * 6.2.2 and 6.2.3): no query or fragment, scheme and host in lower case, no default port,
 * an empty path as "/", dot segments resolved (the WHATWG URL parser does all of these),
 * percent-encodings in upper case and unreserved characters decoded. Undefined when it is not an http(s) URL.
 */
export function normalizeHtu(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  url.search = '';
  url.hash = '';
  url.pathname = url.pathname.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => {
    const char = String.fromCharCode(Number.parseInt(hex, 16));
    return /[A-Za-z0-9\-._~]/.test(char) ? char : `%${hex.toUpperCase()}`;
  });
  return url.href;
}

/**
 * Verifies a DPoP proof for one request (RFC 9449 section 4.3, and section 7.1 for a
 * protected resource): `typ` dpop+jwt, an accepted asymmetric `alg`, a public `jwk` only,
 * the signature, `htm`, `htu`, `iat` within the window, the nonce when this server asks for
 * one, `ath` = the token's hash, the key's thumbprint = the token's `cnf.jkt`, and last a
 * `jti` never seen (so a proof refused for another reason does not use its `jti` up).
 */
export function createDpopProofVerifier(options: DpopProofVerifierOptions): DpopProofVerifier {
  const now = options.now ?? Date.now;
  const maxAgeSeconds = options.maxAgeSeconds ?? 60;
  const tolerance = options.clockToleranceSeconds;
  const algorithms = [...options.algorithms];

  return async function verifyDpopProof(request) {
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(request.proof);
    } catch {
      throw new InvalidDpopProof('The DPoP proof is not a JWT.');
    }
    if (header.typ !== 'dpop+jwt') throw new InvalidDpopProof('The DPoP proof must have typ "dpop+jwt".');
    if (typeof header.alg !== 'string' || !algorithms.includes(header.alg)) {
      throw new InvalidDpopProof(`The DPoP proof alg must be one of ${algorithms.join(', ')} (asymmetric).`);
    }
    const jwk = header.jwk as (JWK & Record<string, unknown>) | undefined;
    if (typeof jwk !== 'object' || jwk === null) throw new InvalidDpopProof('The DPoP proof has no jwk header.');
    if (PRIVATE_MEMBERS.some((member) => member in jwk)) throw new InvalidDpopProof('The DPoP proof jwk must be a public key: it has private key members.');

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(request.proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms, currentDate: new Date(now()), clockTolerance: tolerance }));
    } catch (error) {
      if (error instanceof errors.JWSSignatureVerificationFailed) throw new InvalidDpopProof('The DPoP proof signature is invalid.');
      throw new InvalidDpopProof(`The DPoP proof is invalid: ${(error as Error).message}`);
    }
    const { jti, htm, htu, iat, ath, nonce } = payload as JWTPayload & { htm?: unknown; htu?: unknown; ath?: unknown; nonce?: unknown };
    if (typeof jti !== 'string' || jti === '' || jti.length > 512) throw new InvalidDpopProof('The DPoP proof must have a jti (a string of at most 512 characters).');
    if (typeof iat !== 'number') throw new InvalidDpopProof('The DPoP proof must have a numeric iat.');

    const nextNonce = options.nonces?.current();
    if (options.nonces) {
      if (nonce === undefined) throw new UseDpopNonce(nextNonce!, 'This server requires a nonce in DPoP proofs: use the one in DPoP-Nonce.');
      if (typeof nonce !== 'string' || !options.nonces.accepts(nonce)) throw new UseDpopNonce(nextNonce!, 'The DPoP proof nonce is not current: use the one in DPoP-Nonce.');
    }

    if (htm !== request.method) throw new InvalidDpopProof(`The DPoP proof htm must be the request method (${request.method}).`);
    const expected = expectedHtu(options.publicUrl, request.path);
    if (typeof htu !== 'string' || normalizeHtu(htu) !== expected) throw new InvalidDpopProof(`The DPoP proof htu must be ${expected} (without query or fragment).`);

    const nowSeconds = now() / 1000;
    if (iat < nowSeconds - maxAgeSeconds - tolerance) throw new InvalidDpopProof(`The DPoP proof is too old (iat more than ${maxAgeSeconds} s ago): make a new proof for every request.`);
    if (iat > nowSeconds + tolerance) throw new InvalidDpopProof('The DPoP proof was issued in the future (iat later than now plus the allowed clock skew).');

    if (ath !== accessTokenHash(request.accessToken)) throw new InvalidDpopProof('The DPoP proof ath is not the hash of this access token.');

    const thumbprint = await calculateJwkThumbprint(jwk);
    // RFC 9449 section 7.1's own example answers a key mismatch with invalid_token: the token is bound to another key.
    if (thumbprint !== request.boundThumbprint) throw new InvalidToken('Invalid DPoP key binding: the token is bound to another key than the proof (cnf.jkt).', { scheme: 'DPoP' });

    // Remembered as long as the proof could pass the iat check: then it is refused anyway.
    const expiresAtMs = (iat + maxAgeSeconds + tolerance) * 1000 + 1000;
    let first: boolean;
    try {
      first = await options.replayCache.firstUse(proofReplayKey(thumbprint, jti), expiresAtMs);
    } catch (error) {
      if (error instanceof HttpProblem) throw error;
      if (error instanceof ReplayCacheFull) throw new StoreUnavailable('DPoP replay', { cause: error });
      throw error;
    }
    if (!first) throw new InvalidDpopProof('The DPoP proof was used already (its jti): make a new proof for every request.');

    return { thumbprint, jti, nextNonce: options.nonces && nonce !== nextNonce ? nextNonce : undefined };
  };
}
