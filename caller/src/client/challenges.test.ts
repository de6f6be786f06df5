import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { asksForDpopNonce, parseChallenges } from './challenges.js';

describe('parseChallenges', () => {
  it('splits the predictor’s two challenges and keeps each one’s own error', () => {
    const header =
      'Bearer realm="predictor", resource_metadata="http://p.test/.well-known/oauth-protected-resource", DPoP realm="predictor", error="use_dpop_nonce", error_description="use \\"this\\", then that", algs="ES256 PS256"';
    assert.deepEqual(parseChallenges(header), [
      { scheme: 'Bearer', params: { realm: 'predictor', resource_metadata: 'http://p.test/.well-known/oauth-protected-resource' } },
      { scheme: 'DPoP', params: { realm: 'predictor', error: 'use_dpop_nonce', error_description: 'use "this", then that', algs: 'ES256 PS256' } },
    ]);
  });

  it('reads bare schemes, token values and upper-case names, and stops at what it cannot read', () => {
    assert.deepEqual(parseChallenges('Basic, Bearer ERROR=invalid_token'), [
      { scheme: 'Basic', params: {} },
      { scheme: 'Bearer', params: { error: 'invalid_token' } },
    ]);
    assert.deepEqual(parseChallenges(null), []);
    assert.deepEqual(parseChallenges('Bearer error="unterminated'), [{ scheme: 'Bearer', params: {} }]);
  });

  it('sees a nonce request only in a DPoP challenge', () => {
    const answer = (value: string) => new Response(null, { status: 401, headers: { 'www-authenticate': value } });
    assert.equal(asksForDpopNonce(answer('Bearer realm="p", DPoP error="use_dpop_nonce"')), true);
    assert.equal(asksForDpopNonce(answer('Bearer error="use_dpop_nonce", DPoP realm="p"')), false);
    assert.equal(asksForDpopNonce(new Response(null, { status: 401 })), false);
  });
});
