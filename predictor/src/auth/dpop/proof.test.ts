import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exportJWK, generateKeyPair } from 'jose';
import { InvalidDpopProof, InvalidToken, UseDpopNonce, wwwAuthenticate } from '../../http/problems.js';
import { createDpopKey, dpopProof, type DpopKey, type ProofOptions } from '../../testing/dpop-proofs.js';
import { DpopNonces } from './nonces.js';
import { createDpopProofVerifier, expectedHtu, normalizeHtu, type DpopProofVerifierOptions } from './proof.js';
import { MemoryProofReplayCache } from './replay-cache.js';

const PUBLIC_URL = 'https://predictor.test';
const HTU = `${PUBLIC_URL}/v1/predict`;
const TOKEN = 'eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl';
const NOW = Date.UTC(2026, 10, 23, 12, 0, 0);
const NOW_SECONDS = NOW / 1000;

async function setup(overrides: Partial<DpopProofVerifierOptions> = {}) {
  const key = await createDpopKey();
  let now = NOW;
  const replayCache = new MemoryProofReplayCache({ now: () => now });
  const verify = createDpopProofVerifier({ algorithms: ['ES256', 'EdDSA'], publicUrl: PUBLIC_URL, maxAgeSeconds: 60, clockToleranceSeconds: 5, replayCache, now: () => now, ...overrides });
  /** A proof for POST /v1/predict with TOKEN, now: valid unless `options` break it. */
  const proof = (options: Partial<ProofOptions> = {}, signer: DpopKey = key) => dpopProof(signer, { htm: 'POST', htu: HTU, accessToken: TOKEN, iat: NOW_SECONDS, ...options });
  const check = (proofValue: string, request: { method?: string; path?: string; accessToken?: string; boundThumbprint?: string } = {}) =>
    verify({ proof: proofValue, method: 'POST', path: '/v1/predict', accessToken: TOKEN, boundThumbprint: key.thumbprint, ...request });
  return { key, verify, proof, check, advance: (ms: number) => (now += ms) };
}

/** Asserts a 401 invalid_dpop_proof whose description matches. */
const invalidProof = (pattern: RegExp) => (error: unknown) => {
  assert.ok(error instanceof InvalidDpopProof, `expected InvalidDpopProof, got ${String(error)}`);
  assert.equal(error.status, 401);
  assert.match(error.detail, pattern);
  return true;
};

describe('DPoP proof verification (RFC 9449 sections 4.3 and 7.1)', () => {
  it('accepts a well-formed proof and returns its key thumbprint', async () => {
    const { proof, check, key } = await setup();
    const verified = await check(await proof());
    assert.equal(verified.thumbprint, key.thumbprint);
    assert.equal(verified.nextNonce, undefined);
  });

  it('refuses a value that is not a JWT', async () => {
    const { check } = await setup();
    await assert.rejects(check('not-a-jwt'), invalidProof(/not a JWT/));
  });

  it('refuses typ other than dpop+jwt (an access token as a proof)', async () => {
    const { proof, check } = await setup();
    await assert.rejects(check(await proof({ header: { typ: 'at+jwt' } })), invalidProof(/typ "dpop\+jwt"/));
    await assert.rejects(check(await proof({ header: { typ: undefined } })), invalidProof(/typ "dpop\+jwt"/));
  });

  it('refuses a symmetric alg (HS256), and an asymmetric one not in the accepted list', async () => {
    const { proof, check, key } = await setup();
    const hmacKey = new TextEncoder().encode('a-shared-secret-of-thirty-two-bytes!');
    await assert.rejects(check(await proof({ header: { alg: 'HS256' }, signWith: hmacKey })), invalidProof(/alg must be one of ES256, EdDSA/));
    const es384 = await createDpopKey('ES384');
    await assert.rejects(check(await proof({}, es384), { boundThumbprint: es384.thumbprint }), invalidProof(/alg must be one of/));
    assert.ok(key);
  });

  it('refuses a jwk with private key members, and a proof without jwk', async () => {
    const { proof, check } = await setup();
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const privateJwk = await exportJWK(privateKey);
    await assert.rejects(check(await proof({ header: { jwk: privateJwk }, signWith: privateKey })), invalidProof(/must be a public key/));
    await assert.rejects(check(await proof({ header: { jwk: undefined } })), invalidProof(/no jwk/));
  });

  it('refuses a proof signed by another key than its jwk', async () => {
    const { proof, check } = await setup();
    const other = await createDpopKey();
    await assert.rejects(check(await proof({ signWith: other.privateKey })), invalidProof(/signature is invalid/));
  });

  it('refuses a wrong htm (a GET proof on a POST)', async () => {
    const { proof, check } = await setup();
    await assert.rejects(check(await proof({ htm: 'GET' })), invalidProof(/htm must be the request method \(POST\)/));
    await assert.rejects(check(await proof({ htm: 'post' })), invalidProof(/htm/));
  });

  it('refuses an htu of another host, scheme, port or path', async () => {
    const { proof, check } = await setup();
    for (const htu of ['https://evil.example/v1/predict', 'http://predictor.test/v1/predict', 'https://predictor.test:8443/v1/predict', `${PUBLIC_URL}/v1/models`, `${PUBLIC_URL}/v1/predict/`]) {
      await assert.rejects(check(await proof({ htu })), invalidProof(/htu must be https:\/\/predictor\.test\/v1\/predict/), htu);
    }
    await assert.rejects(check(await proof({ claims: { htu: undefined } })), invalidProof(/htu/));
  });

  it('compares htu without query and fragment, scheme and host case-insensitively, as RFC 9449 section 4.3 normalises', async () => {
    const { proof, check } = await setup();
    for (const htu of [`${HTU}?tenant=other`, `${HTU}#part`, 'HTTPS://Predictor.TEST/v1/predict', 'https://predictor.test:443/v1/predict', 'https://predictor.test/v1/%70redict', 'https://predictor.test/v1/./predict']) {
      await check(await proof({ htu }));
    }
  });

  it('uses the configured public URL, path prefix included, never the Host of the request', () => {
    assert.equal(expectedHtu('https://api.example/ml/', '/v1/predict'), 'https://api.example/ml/v1/predict');
    assert.equal(expectedHtu('HTTPS://API.example:443', '/v1/predict'), 'https://api.example/v1/predict');
    assert.equal(normalizeHtu('ftp://predictor.test/v1/predict'), undefined);
    assert.equal(normalizeHtu('/v1/predict'), undefined);
    assert.equal(normalizeHtu('https://predictor.test/a%2fb'), 'https://predictor.test/a%2Fb');
  });

  it('refuses a proof older than the window, and one issued in the future beyond the clock tolerance', async () => {
    const { proof, check } = await setup();
    await assert.rejects(check(await proof({ iat: NOW_SECONDS - 66 })), invalidProof(/too old/));
    await check(await proof({ iat: NOW_SECONDS - 64 }));
    await assert.rejects(check(await proof({ iat: NOW_SECONDS + 6 })), invalidProof(/in the future/));
    await check(await proof({ iat: NOW_SECONDS + 4 }));
    await assert.rejects(check(await proof({ claims: { iat: undefined } })), invalidProof(/iat/));
  });

  it('refuses a reused jti, and a jti under another key is another proof', async () => {
    const { proof, check } = await setup();
    const once = await proof({ jti: 'jti-1' });
    await check(once);
    await assert.rejects(check(once), invalidProof(/used already/));
    await assert.rejects(check(await proof({ jti: 'jti-1' })), invalidProof(/used already/));
    const other = await createDpopKey();
    await check(await proof({ jti: 'jti-1' }, other), { boundThumbprint: other.thumbprint });
    await assert.rejects(check(await proof({ claims: { jti: undefined } })), invalidProof(/jti/));
  });

  it('does not use a jti up when the proof is refused for another reason', async () => {
    const { proof, check } = await setup();
    await assert.rejects(check(await proof({ jti: 'jti-2', htm: 'GET' })), invalidProof(/htm/));
    await check(await proof({ jti: 'jti-2' }));
  });

  it('forgets a jti once its proof is too old to be accepted anyway', async () => {
    const { proof, check, advance } = await setup();
    const once = await proof();
    await check(once);
    advance(70_000);
    await assert.rejects(check(once), invalidProof(/too old/));
  });

  it('refuses a wrong ath (a proof made for another token) and a missing one', async () => {
    const { proof, check } = await setup();
    await assert.rejects(check(await proof({ accessToken: `${TOKEN}x` })), invalidProof(/ath is not the hash of this access token/));
    await assert.rejects(check(await proof({ accessToken: undefined })), invalidProof(/ath/));
  });

  it('refuses a proof whose key is not the one the token is bound to (cnf.jkt): invalid_token under DPoP', async () => {
    const { proof, check } = await setup();
    const attacker = await createDpopKey();
    await assert.rejects(check(await proof({}, attacker)), (error: unknown) => {
      assert.ok(error instanceof InvalidToken);
      assert.match(error.detail, /Invalid DPoP key binding/);
      assert.match(wwwAuthenticate(error.challenge!, 'DPoP', { dpopAlgorithms: ['ES256'] }), /DPoP realm="predictor", error="invalid_token"/);
      return true;
    });
  });
});

describe('server-provided nonces at the predictor (RFC 9449 section 9)', () => {
  const SECRET = 'predictor-nonce-secret-of-32-characters!';

  it('asks for a nonce (use_dpop_nonce, DPoP-Nonce) when the proof has none or a foreign one, and accepts the current one', async () => {
    let now = NOW;
    const nonces = new DpopNonces({ secret: SECRET, now: () => now });
    const { proof, check } = await setup({ nonces, now: () => now });
    const asked = await check(await proof()).catch((error: unknown) => error);
    assert.ok(asked instanceof UseDpopNonce);
    assert.equal(asked.status, 401);
    assert.equal(asked.headers['dpop-nonce'], nonces.current());
    assert.match(wwwAuthenticate(asked.challenge!, 'DPoP', { dpopAlgorithms: ['ES256'] }), /^Bearer realm="predictor", DPoP realm="predictor", error="use_dpop_nonce", error_description="[^"]+", algs="ES256"$/);

    await assert.rejects(check(await proof({ nonce: 'made-up' })), UseDpopNonce);
    const verified = await check(await proof({ nonce: nonces.current() }));
    assert.equal(verified.nextNonce, undefined);

    // The previous period's nonce still works and comes back with the new one; three periods on, it is refused.
    const old = nonces.current();
    now += 60_000;
    assert.equal((await check(await proof({ nonce: old, iat: now / 1000 }))).nextNonce, nonces.current());
    now += 120_000;
    await assert.rejects(check(await proof({ nonce: old, iat: now / 1000 })), UseDpopNonce);
  });

  it('accepts another replica\'s nonce when the secret is the same, not when it differs', () => {
    const a = new DpopNonces({ secret: SECRET, now: () => NOW });
    assert.ok(new DpopNonces({ secret: SECRET, now: () => NOW + 1_000 }).accepts(a.current()));
    assert.ok(!new DpopNonces({ secret: `${SECRET}-other`, now: () => NOW }).accepts(a.current()));
  });
});
