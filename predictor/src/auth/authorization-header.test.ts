import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidAuthorizationRequest } from '../http/problems.js';
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
    ['another scheme', 'Basic dXNlcjpwYXNz'],
    ['extra parts', 'Bearer abc def'],
    ['a token sent twice', 'Bearer abc, Bearer abc'],
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
});
