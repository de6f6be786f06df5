import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidAuthorizationRequest, UnsupportedAuthScheme } from '../http/problems.js';
import { bearerTokenFrom } from './authorization-header.js';

describe('bearerTokenFrom', () => {
  it('returns undefined when no Authorization header was sent', () => {
    assert.equal(bearerTokenFrom(undefined), undefined);
  });

  it('accepts the scheme case-insensitively', () => {
    assert.equal(bearerTokenFrom('Bearer abc.def-ghi_jk~l+m/n=='), 'abc.def-ghi_jk~l+m/n==');
    assert.equal(bearerTokenFrom('bearer abc'), 'abc');
  });

  for (const [name, header] of [
    ['an empty header', ''],
    ['a scheme without token', 'Bearer'],
    ['extra parts', 'Bearer abc def'],
    ['a token sent twice', 'Bearer abc, Bearer abc'],
    ['a bearer token beside other credentials', 'Bearer abc Basic dXNlcjpwYXNz'],
    ['characters outside b64token', 'Bearer abc"def'],
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
