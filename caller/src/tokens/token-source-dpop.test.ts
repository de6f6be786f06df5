import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { decodeJwt, decodeProtectedHeader, type JWK } from 'jose';
import { DPoPKey } from '../dpop/dpop-key.js';
import { sendJson, startStubIssuer } from '../testing/stub-server.js';
import { TokenRequestError } from './token-errors.js';
import { TokenSource } from './token-source.js';

const stubs: { close: () => Promise<void> }[] = [];
after(() => Promise.all(stubs.map((stub) => stub.close())));

async function issuer(options: Parameters<typeof startStubIssuer>[0] = {}) {
  const stub = await startStubIssuer(options);
  stubs.push(stub);
  return stub;
}

const tokenRequests = (stub: Awaited<ReturnType<typeof issuer>>) => stub.requests.filter((request) => request.path === '/token');

describe('TokenSource with a DPoP key', () => {
  it('sends a proof of its key with the token request (htm POST, htu the token endpoint, no ath) and keeps token_type DPoP with the cached token', async () => {
    const stub = await issuer({ dpopAlgs: ['ES256', 'EdDSA'] });
    const key = await DPoPKey.generate();
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's', dpop: key });
    const token = await tokens.getToken();
    assert.equal(token.tokenType, 'DPoP');
    assert.equal(token.dpopKey, key);
    assert.equal(await tokens.getToken(), token, 'served from the cache, type and key included');
    const [request] = tokenRequests(stub);
    const proof = String(request?.headers['dpop']);
    const header = decodeProtectedHeader(proof);
    assert.equal(header.typ, 'dpop+jwt');
    assert.deepEqual({ kty: (header.jwk as JWK).kty, x: (header.jwk as JWK).x }, { kty: key.publicJwk.kty, x: key.publicJwk.x });
    const claims = decodeJwt(proof);
    assert.equal(claims['htm'], 'POST');
    assert.equal(claims['htu'], `${stub.url}/token`);
    assert.equal(claims['ath'], undefined);
    assert.equal(tokens.dpopKey, key);
  });

  it('without a key, keeps token_type Bearer and sends no proof', async () => {
    const stub = await issuer();
    const token = await new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's' }).getToken();
    assert.equal(token.tokenType, 'Bearer');
    assert.equal(token.dpopKey, undefined);
    assert.equal(tokenRequests(stub)[0]?.headers['dpop'], undefined);
  });

  it("answers the token endpoint's 400 use_dpop_nonce once, at once, with its nonce (openid-client's retry)", async () => {
    const stub = await issuer({ dpopNonce: 'as-nonce-1' });
    const tokens = new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's', dpop: await DPoPKey.generate() });
    assert.equal((await tokens.getToken()).tokenType, 'DPoP');
    const requests = tokenRequests(stub);
    assert.deepEqual(requests.map((request) => decodeJwt(String(request.headers['dpop']))['nonce']), [undefined, 'as-nonce-1']);
    assert.notEqual(decodeJwt(String(requests[0]?.headers['dpop'])).jti, decodeJwt(String(requests[1]?.headers['dpop'])).jti);
    assert.equal(tokens.tokenRequests, 1, 'one token request as the source counts them: the nonce round is the protocol');
  });

  it('refuses a bearer token where a bound one was asked for, and a key alg the server does not take, as configuration', async () => {
    const bearer = await issuer({ answerToken: (_count, response) => sendJson(response, 200, { access_token: 'plain', token_type: 'Bearer', expires_in: 60 }) });
    await assert.rejects(
      new TokenSource({ issuer: bearer.url, clientId: 'c', clientSecret: () => 's', dpop: await DPoPKey.generate() }).getToken(),
      (error: unknown) => error instanceof TokenRequestError && error.code === 'dpop_not_supported' && !error.retryable && /got token_type bearer/.test(error.message),
    );
    const psOnly = await issuer({ dpopAlgs: ['PS256'] });
    await assert.rejects(
      new TokenSource({ issuer: psOnly.url, clientId: 'c', clientSecret: () => 's', dpop: await DPoPKey.generate() }).getToken(),
      (error: unknown) => error instanceof TokenRequestError && error.code === 'dpop_not_supported' && /accepts DPoP proofs signed with PS256, not ES256/.test(error.message),
    );
    assert.equal(psOnly.tokenRequests(), 0);
  });

  it('says what to do when the client is registered to require DPoP and sent no proof', async () => {
    const stub = await issuer({ answerToken: (_count, response) => sendJson(response, 400, { error: 'invalid_grant', error_description: 'DPoP proof JWT not provided' }) });
    await assert.rejects(
      new TokenSource({ issuer: stub.url, clientId: 'c', clientSecret: () => 's' }).getToken(),
      (error: unknown) => error instanceof TokenRequestError && error.code === 'invalid_grant' && /registered to use DPoP.*--dpop or CLIENT_DPOP=true/.test(error.message),
    );
  });
});
