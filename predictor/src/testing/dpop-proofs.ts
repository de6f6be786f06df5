import { randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { accessTokenHash } from '../auth/dpop/proof.js';

/** A caller's DPoP key: the private key signs proofs, the public JWK goes into their header. */
export interface DpopKey {
  alg: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
  /** RFC 7638 thumbprint: the `cnf.jkt` of tokens bound to it. */
  thumbprint: string;
}

export async function createDpopKey(alg = 'ES256'): Promise<DpopKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  return { alg, privateKey, publicJwk, thumbprint: await calculateJwkThumbprint(publicJwk) };
}

export interface ProofOptions {
  htm: string;
  htu: string;
  /** The token the proof goes with (`ath`); absent: no `ath` (a token request). */
  accessToken?: string;
  /** Seconds since the epoch. Default now. */
  iat?: number;
  jti?: string;
  nonce?: string;
  /** Replaces or adds claims (`undefined` removes one). */
  claims?: JWTPayload;
  /** Replaces or adds header parameters (typ, alg, jwk…). */
  header?: Record<string, unknown>;
  /** Sign with another key than the one in the header's jwk. */
  signWith?: CryptoKey | Uint8Array;
}

/** A DPoP proof (RFC 9449 section 4.2), well-formed unless the options say otherwise. */
export function dpopProof(key: DpopKey, options: ProofOptions): Promise<string> {
  const claims: JWTPayload = {
    htm: options.htm,
    htu: options.htu,
    iat: options.iat ?? Math.floor(Date.now() / 1000),
    jti: options.jti ?? randomUUID(),
    ...(options.accessToken === undefined ? {} : { ath: accessTokenHash(options.accessToken) }),
    ...(options.nonce === undefined ? {} : { nonce: options.nonce }),
    ...options.claims,
  };
  for (const [name, value] of Object.entries(claims)) if (value === undefined) delete claims[name];
  const header = { alg: key.alg, typ: 'dpop+jwt', jwk: key.publicJwk, ...options.header } as { alg: string };
  return new SignJWT(claims).setProtectedHeader(header).sign(options.signWith ?? key.privateKey);
}
