import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidAuthorizationRequest, UnsupportedAuthScheme } from '../http/problems.js';
import { credentialsFrom } from './authorization-header.js';

const bearerTokenFrom = (header: string | undefined) => credentialsFrom(header)?.token;

describe('credentialsFrom', () => {
  it('returns undefined when no Authorization header was sent', () => {
    assert.equal(bearerTokenFrom(undefined), undefined);
  });

  it('accepts the scheme case-insensitively', () => {
    assert.equal(bearerTokenFrom('Bearer abc.def-ghi_jk~l+m/n=='), 'abc.def-ghi_jk~l+m/n==');
    assert.equal(bearerTokenFrom('bearer abc'), 'abc');
  });

  it('tells a DPoP-scheme token (RFC 9449 section 7.1) from a Bearer one, case-insensitively', () => {
    assert.deepEqual(credentialsFrom('DPoP abc.def'), { scheme: 'DPoP', token: 'abc.def' });
    assert.deepEqual(credentialsFrom('dpop abc'), { scheme: 'DPoP', token: 'abc' });
    assert.deepEqual(credentialsFrom('Bearer abc'), { scheme: 'Bearer', token: 'abc' });
  });

  for (const [name, header] of [
    ['an empty header', ''],
    ['a scheme without token', 'Bearer'],
    ['extra parts', 'Bearer abc def'],
    ['a token sent twice', 'Bearer abc, Bearer abc'],
    ['a bearer token beside other credentials', 'Bearer abc Basic dXNlcjpwYXNz'],
    ['characters outside b64token', 'Bearer abc"def'],
    ['a DPoP scheme without token', 'DPoP'],
    ['a DPoP token sent twice', 'DPoP abc, DPoP abc'],
  ] as const) {
    it(`rejects ${name} as invalid_request`, () => {
      assert.throws(() => bearerTokenFrom(header), (error: unknown) => {
        assert.ok(error instanceof InvalidAuthorizationRequest);
        assert.equal(error.status, 400);
        assert.match(error.headers['www-authenticate'] ?? '', /error="invalid_request"/);
        return true;
      });
    });
  }

  for (const header of ['Basic dXNlcjpwYXNz', 'basic dXNlcjpwYXNz', 'Digest username="x", realm="predictor"', 'Basic']) {
    it(`answers another scheme (${header.split(' ')[0]}) with a 401 challenge without error code (RFC 6750 section 3.1)`, () => {
      assert.throws(() => bearerTokenFrom(header), (error: unknown) => {
        assert.ok(error instanceof UnsupportedAuthScheme);
        assert.equal(error.status, 401);
        assert.equal(error.headers['www-authenticate'], 'Bearer realm="predictor"');
        return true;
      });
    });
  }
});
