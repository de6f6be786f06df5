import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { calculateJwkThumbprint, decodeProtectedHeader, EmbeddedJWK, exportJWK, generateKeyPair, jwtVerify, type JWK } from 'jose';
import { ConfigError } from '@m2m/common';
import { loadCallerConfig } from '../config.js';
import { accessTokenHash, DPoPKey, DPoPKeyError } from './dpop-key.js';

let directory = '';
before(async () => {
  directory = await mkdtemp(join(tmpdir(), 'caller-dpop-'));
});
after(() => rm(directory, { recursive: true, force: true }));

/** Verifies a proof with the key in its own header, as a server does, and returns header and claims. */
async function readProof(proof: string) {
  const { payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt' });
  return { header: protectedHeader, claims: payload as Record<string, unknown> };
}

async function privateJwk(alg: 'ES256' | 'Ed25519' | 'PS256'): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  return { ...(await exportJWK(privateKey)), alg };
}

describe('DPoPKey', () => {
  it('generates an ES256 key pair whose private key cannot be exported', async () => {
    const key = await DPoPKey.generate();
    assert.equal(key.alg, 'ES256');
    assert.equal(key.keyPair.privateKey.extractable, false);
    assert.equal(key.keyPair.publicKey.extractable, true);
    assert.deepEqual(Object.keys(key.publicJwk).sort(), ['crv', 'kty', 'x', 'y']);
    assert.equal(key.thumbprint, await calculateJwkThumbprint(key.publicJwk));
  });

  it('makes a proof per request: typ, alg, public jwk, htm, htu without query or fragment, iat from its clock, ath of the token, a new jti each time', async () => {
    const jtis = ['jti-1', 'jti-2'];
    const key = await DPoPKey.generate('ES256', { wallNow: () => 1_700_000_000_999, newJti: () => jtis.shift()! });
    const first = await readProof(await key.proof({ method: 'post', url: 'https://api.example/v1/predict?x=1#frag', accessToken: 'token-a' }));
    assert.deepEqual(first.header, { alg: 'ES256', typ: 'dpop+jwt', jwk: key.publicJwk });
    assert.deepEqual(first.claims, { htm: 'POST', htu: 'https://api.example/v1/predict', iat: 1_700_000_000, jti: 'jti-1', ath: accessTokenHash('token-a') });
    const second = await readProof(await key.proof({ method: 'GET', url: 'https://api.example/v1/models' }));
    assert.equal(second.claims['jti'], 'jti-2');
    assert.equal(second.claims['ath'], undefined, 'no token, no ath (a token request)');
  });

  it('puts the latest DPoP-Nonce of the same origin into later proofs, and no other origin’s', async () => {
    const key = await DPoPKey.generate();
    key.rememberNonce('https://api.example/v1/predict', new Headers({ 'dpop-nonce': 'n-1' }));
    key.rememberNonce('https://api.example/v1/predict', new Headers());
    assert.equal((await readProof(await key.proof({ method: 'POST', url: 'https://api.example/v1/other' }))).claims['nonce'], 'n-1');
    key.rememberNonce('https://api.example/', new Headers({ 'dpop-nonce': 'n-2' }));
    assert.equal((await readProof(await key.proof({ method: 'POST', url: 'https://api.example/v1/predict' }))).claims['nonce'], 'n-2');
    assert.equal((await readProof(await key.proof({ method: 'POST', url: 'https://auth.example/token' }))).claims['nonce'], undefined);
  });

  it('imports a private JWK: the alg from the JWK or its curve, the thumbprint of its public part, private members never in a proof', async () => {
    for (const alg of ['ES256', 'Ed25519', 'PS256'] as const) {
      const jwk = await privateJwk(alg);
      const key = await DPoPKey.fromJwk(jwk);
      const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicPart } = jwk;
      assert.equal(key.alg, alg);
      assert.equal(key.thumbprint, await calculateJwkThumbprint(publicPart));
      const header = decodeProtectedHeader(await key.proof({ method: 'POST', url: 'https://api.example/' }));
      assert.equal(header.alg, alg);
      assert.deepEqual(Object.keys(header.jwk as object).filter((member) => ['d', 'p', 'q', 'dp', 'dq', 'qi'].includes(member)), []);
    }
    const { alg: _alg, ...withoutAlg } = await privateJwk('ES256');
    assert.equal((await DPoPKey.fromJwk(withoutAlg)).alg, 'ES256');
    assert.equal((await DPoPKey.fromJwk({ ...(await privateJwk('Ed25519')), alg: 'EdDSA' })).alg, 'Ed25519');
  });

  it('refuses a key that cannot sign proofs, saying why', async () => {
    const { d: _d, ...publicOnly } = await privateJwk('ES256');
    await assert.rejects(DPoPKey.fromJwk(publicOnly, { source: 'key.json' }), (error: unknown) => error instanceof DPoPKeyError && /key\.json has no private key/.test(error.message));
    await assert.rejects(DPoPKey.fromJwk({ kty: 'oct', k: 'c2VjcmV0' }), /symmetric key/);
    await assert.rejects(DPoPKey.fromJwk({ ...(await privateJwk('ES256')), alg: 'HS256' }), /alg "HS256" is not one of/);
    await assert.rejects(DPoPKey.generate('RS1'), /alg "RS1" is not one of/);
  });
});

describe('DPoP configuration', () => {
  it('CLIENT_DPOP=true makes one new key pair for the configuration; CLIENT_DPOP_ALG picks its alg', async () => {
    const config = loadCallerConfig({ CLIENT_ID: 'c', CLIENT_SECRET: 's', CLIENT_DPOP: 'true' });
    assert.ok(config.dpop);
    const key = await config.dpop.key();
    assert.equal(key.alg, 'ES256');
    assert.equal(await config.dpop.key(), key, 'one key pair, however often it is asked for');
    assert.equal((await loadCallerConfig({ CLIENT_ID: 'c', CLIENT_SECRET: 's', CLIENT_DPOP: 'true', CLIENT_DPOP_ALG: 'Ed25519' }).dpop!.key()).alg, 'Ed25519');
    assert.equal(loadCallerConfig({ CLIENT_ID: 'c', CLIENT_SECRET: 's' }).dpop, undefined);
  });

  it('CLIENT_DPOP_KEY_FILE turns DPoP on with the key of the file, the same on every run', async () => {
    const jwk = await privateJwk('ES256');
    const file = join(directory, 'dpop-key.json');
    await writeFile(file, JSON.stringify(jwk));
    const { d: _d, ...publicPart } = jwk;
    const first = await loadCallerConfig({ CLIENT_ID: 'c', CLIENT_SECRET: 's', CLIENT_DPOP_KEY_FILE: file }).dpop!.key();
    const second = await loadCallerConfig({ CLIENT_ID: 'c', CLIENT_SECRET: 's', CLIENT_DPOP: 'true', CLIENT_DPOP_KEY_FILE: file }).dpop!.key();
    assert.equal(first.thumbprint, await calculateJwkThumbprint(publicPart));
    assert.equal(second.thumbprint, first.thumbprint);
    assert.equal(first.keyPair.privateKey.extractable, false);
  });

  it('names the variable when the DPoP settings are unusable', async () => {
    const base = { CLIENT_ID: 'c', CLIENT_SECRET: 's' };
    const refused = (env: Record<string, string>, message: RegExp) =>
      assert.throws(() => loadCallerConfig({ ...base, ...env }), (error: unknown) => error instanceof ConfigError && message.test(error.message));
    refused({ CLIENT_DPOP: 'yes' }, /^CLIENT_DPOP /);
    refused({ CLIENT_DPOP: 'true', CLIENT_DPOP_ALG: 'HS256' }, /^CLIENT_DPOP_ALG must be one of ES256/);
    refused({ CLIENT_DPOP_ALG: 'ES256' }, /^CLIENT_DPOP_ALG is set but DPoP is off/);
    refused({ CLIENT_DPOP: 'false', CLIENT_DPOP_KEY_FILE: '/x' }, /^CLIENT_DPOP_KEY_FILE is set but CLIENT_DPOP=false/);
    refused({ CLIENT_DPOP_KEY_FILE: join(directory, 'absent.json') }, /^CLIENT_DPOP_KEY_FILE: cannot read .*absent\.json \(ENOENT\)/);
    const notJson = join(directory, 'not-json');
    await writeFile(notJson, 'hello');
    refused({ CLIENT_DPOP_KEY_FILE: notJson }, /is not a JSON Web Key/);
    const publicOnly = join(directory, 'public.json');
    const { d: _d, ...publicPart } = await privateJwk('ES256');
    await writeFile(publicOnly, JSON.stringify(publicPart));
    refused({ CLIENT_DPOP_KEY_FILE: publicOnly }, /must be a private JWK/);
  });
});
