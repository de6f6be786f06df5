import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { JWTVerifyGetKey } from 'jose';
import { buildApp } from '../../app.js';
import { createDpopKey, dpopProof, type DpopKey } from '../../testing/dpop-proofs.js';
import { testDeps } from '../../testing/test-app.js';
import { createTestIssuer, TEST_AUDIENCE, TEST_ISSUER } from '../../testing/test-issuer.js';
import { createTokenVerifier } from '../token-verifier.js';
import { DpopNonces } from './nonces.js';
import { createDpopProofVerifier } from './proof.js';
import { MemoryProofReplayCache } from './replay-cache.js';

const PUBLIC_URL = 'https://predictor.public.test';
const HTU = `${PUBLIC_URL}/v1/predict`;
const METADATA_URL = `${PUBLIC_URL}/.well-known/oauth-protected-resource`;
const ALGS = ['ES256', 'EdDSA'];
const ROW = [5.1, 3.5, 1.4, 0.2];

describe('DPoP-bound tokens at the predictor (RFC 9449 section 7) and its resource metadata (RFC 9728)', () => {
  let issuer: Awaited<ReturnType<typeof createTestIssuer>>;
  let key: DpopKey;
  let keyLookups = 0;

  function appWith(options: { nonces?: DpopNonces } = {}) {
    const getKey: JWTVerifyGetKey = (header, token) => {
      keyLookups += 1;
      return (issuer.getKey as (h: typeof header, t: typeof token) => ReturnType<typeof issuer.getKey>)(header, token);
    };
    return buildApp(
      testDeps({
        verifyToken: createTokenVerifier({ issuer: TEST_ISSUER, audience: TEST_AUDIENCE, algorithms: ['ES256'], clockToleranceSeconds: 5, getKey }),
        dpop: {
          verifyProof: createDpopProofVerifier({ algorithms: ALGS, publicUrl: PUBLIC_URL, clockToleranceSeconds: 5, replayCache: new MemoryProofReplayCache(), nonces: options.nonces }),
          algorithms: ALGS,
        },
        protectedResource: { resource: TEST_AUDIENCE, publicUrl: PUBLIC_URL, authorizationServers: [TEST_ISSUER], scopes: ['predict', 'models:read'], documentationUrl: 'https://docs.test/predictor' },
      }),
    );
  }
  let app: ReturnType<typeof appWith>;

  before(async () => {
    issuer = await createTestIssuer();
    key = await createDpopKey();
    app = appWith();
  });

  const boundToken = (jkt = key.thumbprint) => issuer.token({ claims: { cnf: { jkt } } });
  const predict = (authorization: string | undefined, headers: Record<string, string> = {}, application = app) =>
    application.request('/v1/predict', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}), ...headers },
      body: JSON.stringify({ inputs: [ROW] }),
    });
  const proofFor = (token: string, options: Partial<Parameters<typeof dpopProof>[1]> = {}) => dpopProof(key, { htm: 'POST', htu: HTU, accessToken: token, ...options });

  it('answers 200 to a DPoP-bound token with a proof of its key', async () => {
    const token = await boundToken();
    const response = await predict(`DPoP ${token}`, { dpop: await proofFor(token) });
    assert.equal(response.status, 200, await response.clone().text());
  });

  it('refuses a DPoP-bound token presented as Bearer (401 invalid_token), offering both schemes', async () => {
    const token = await boundToken();
    const response = await predict(`Bearer ${token}`, { dpop: await proofFor(token) });
    assert.equal(response.status, 401);
    assert.equal(
      response.headers.get('www-authenticate'),
      `Bearer realm="predictor", error="invalid_token", error_description="This token is DPoP-bound: send it as Authorization: DPoP <token> with a DPoP proof of its key.", resource_metadata="${METADATA_URL}", ` +
        `DPoP realm="predictor", algs="ES256 EdDSA", resource_metadata="${METADATA_URL}"`,
    );
  });

  it('refuses the DPoP scheme without a DPoP header: 401 invalid_dpop_proof on the DPoP challenge', async () => {
    const token = await boundToken();
    const response = await predict(`DPoP ${token}`);
    assert.equal(response.status, 401);
    assert.equal(response.headers.get('content-type'), 'application/problem+json');
    assert.match(response.headers.get('www-authenticate') ?? '', /^Bearer realm="predictor", resource_metadata="[^"]+", DPoP realm="predictor", error="invalid_dpop_proof", error_description="A DPoP-bound token needs a DPoP proof in the DPoP header\.", algs="ES256 EdDSA", resource_metadata="[^"]+"$/);
  });

  it('refuses a token without cnf.jkt under the DPoP scheme, and accepts it as Bearer', async () => {
    const token = await issuer.token();
    const response = await predict(`DPoP ${token}`, { dpop: await proofFor(token) });
    assert.equal(response.status, 401);
    assert.match(response.headers.get('www-authenticate') ?? '', /DPoP realm="predictor", error="invalid_token", error_description="This token is not DPoP-bound/);
    assert.equal((await predict(`Bearer ${token}`)).status, 200);
  });

  it('refuses a token bound to another key than the proof\'s', async () => {
    const other = await createDpopKey();
    const token = await boundToken(other.thumbprint);
    const response = await predict(`DPoP ${token}`, { dpop: await proofFor(token) });
    assert.equal(response.status, 401);
    assert.match(response.headers.get('www-authenticate') ?? '', /DPoP realm="predictor", error="invalid_token", error_description="Invalid DPoP key binding/);
  });

  it('checks the proof on every request: a token served from the verified-token cache still needs a fresh proof', async () => {
    const token = await boundToken();
    const before = keyLookups;
    const proof = await proofFor(token);
    assert.equal((await predict(`DPoP ${token}`, { dpop: proof })).status, 200);
    // Cached now: no further key lookup, but the replayed proof, a proof without one and a proof for another method are refused.
    const replayed = await predict(`DPoP ${token}`, { dpop: proof });
    assert.equal(replayed.status, 401);
    assert.match(replayed.headers.get('www-authenticate') ?? '', /error="invalid_dpop_proof", error_description="The DPoP proof was used already/);
    assert.equal((await predict(`DPoP ${token}`)).status, 401);
    assert.equal((await predict(`DPoP ${token}`, { dpop: await proofFor(token, { htm: 'GET' }) })).status, 401);
    assert.equal((await predict(`DPoP ${token}`, { dpop: await proofFor(token) })).status, 200);
    assert.equal(keyLookups, before + 1, 'the token was verified once and then served from the cache');
  });

  it('checks htu against the configured public URL, whatever the Host of the request says', async () => {
    const token = await boundToken();
    const forHost = await proofFor(token, { htu: 'https://evil.example/v1/predict' });
    const refused = await predict(`DPoP ${token}`, { dpop: forHost, host: 'evil.example', 'x-forwarded-host': 'evil.example' });
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get('www-authenticate') ?? '', /htu must be https:\/\/predictor\.public\.test\/v1\/predict/);
    const accepted = await predict(`DPoP ${token}`, { dpop: await proofFor(token), host: 'internal-upstream:8080' });
    assert.equal(accepted.status, 200);
  });

  it('answers no credentials with both challenges and the resource metadata URL, no error code', async () => {
    const response = await predict(undefined);
    assert.equal(response.status, 401);
    assert.equal(response.headers.get('www-authenticate'), `Bearer realm="predictor", resource_metadata="${METADATA_URL}", DPoP realm="predictor", algs="ES256 EdDSA", resource_metadata="${METADATA_URL}"`);
    const basic = await predict('Basic dXNlcjpwYXNz');
    assert.equal(basic.headers.get('www-authenticate'), response.headers.get('www-authenticate'));
  });

  it('puts a 403 insufficient_scope on the scheme the request used', async () => {
    const token = await issuer.token({ claims: { cnf: { jkt: key.thumbprint }, scope: 'models:read' } });
    const response = await predict(`DPoP ${token}`, { dpop: await proofFor(token) });
    assert.equal(response.status, 403);
    assert.match(response.headers.get('www-authenticate') ?? '', /^Bearer realm="predictor", resource_metadata="[^"]+", DPoP realm="predictor", error="insufficient_scope", scope="predict"/);
  });

  it('serves its protected-resource metadata at /.well-known/oauth-protected-resource', async () => {
    const response = await app.request('/.well-known/oauth-protected-resource');
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/json');
    assert.deepEqual(await response.json(), {
      resource: TEST_AUDIENCE,
      authorization_servers: [TEST_ISSUER],
      scopes_supported: ['predict', 'models:read'],
      bearer_methods_supported: ['header'],
      dpop_signing_alg_values_supported: ALGS,
      dpop_bound_access_tokens_required: false,
      resource_documentation: 'https://docs.test/predictor',
    });
  });

  it('with nonces on, answers a proof without one with 401 use_dpop_nonce and DPoP-Nonce, and accepts the retry', async () => {
    const nonces = new DpopNonces({ secret: 'predictor-nonce-secret-of-32-characters!' });
    const withNonces = appWith({ nonces });
    const token = await boundToken();
    const first = await predict(`DPoP ${token}`, { dpop: await proofFor(token) }, withNonces);
    assert.equal(first.status, 401);
    const nonce = first.headers.get('dpop-nonce');
    assert.equal(nonce, nonces.current());
    assert.match(first.headers.get('www-authenticate') ?? '', /DPoP realm="predictor", error="use_dpop_nonce"/);
    const retry = await predict(`DPoP ${token}`, { dpop: await proofFor(token, { nonce: nonce! }) }, withNonces);
    assert.equal(retry.status, 200);
  });
});
