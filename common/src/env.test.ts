import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, EnvReader } from './env.js';

describe('EnvReader', () => {
  it('uses the fallback for unset and empty variables', () => {
    const read = new EnvReader({ EMPTY: '' });
    assert.equal(read.port('UNSET', 9000), 9000);
    assert.equal(read.string('EMPTY', 'x'), 'x');
  });

  for (const [name, read] of [
    ['a port out of range', (env: EnvReader) => env.port('AUTH_PORT', 1)],
    ['a non-integer', (env: EnvReader) => env.integer('ACCESS_TOKEN_TTL', 1, { min: 1, max: 10 })],
    ['a relative URL', (env: EnvReader) => env.url('ISSUER', 'http://x')],
    ['a value outside the allowed set', (env: EnvReader) => env.oneOf('LOG_LEVEL', 'info', ['info', 'debug'])],
  ] as const) {
    it(`rejects ${name} with a one-line error naming the variable`, () => {
      const env = new EnvReader({ AUTH_PORT: '70000', ACCESS_TOKEN_TTL: '5.5', ISSUER: '/relative', LOG_LEVEL: 'loud' });
      assert.throws(() => read(env), (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, /^(AUTH_PORT|ACCESS_TOKEN_TTL|ISSUER|LOG_LEVEL) /);
        assert.doesNotMatch(error.message, /\n/);
        return true;
      });
    });
  }

  it('normalises URLs without a trailing slash and refuses query strings', () => {
    const read = new EnvReader({ ISSUER: 'http://localhost:9000/', BAD: 'http://x/?a=1' });
    assert.equal(read.url('ISSUER', ''), 'http://localhost:9000');
    assert.throws(() => read.url('BAD', ''), /BAD must not have a query/);
  });

  it('reads service URLs without ever showing a password in an error', () => {
    const read = new EnvReader({ DATABASE_URL: 'postgres://app:s3cret-pw@db:5432/m2m', WRONG: 'http://app:s3cret-pw@db/', MANGLED: 's3cret-pw' });
    assert.equal(read.serviceUrl('DATABASE_URL', ['postgres:']), 'postgres://app:s3cret-pw@db:5432/m2m');
    assert.equal(read.serviceUrl('UNSET', ['postgres:']), undefined);
    for (const name of ['WRONG', 'MANGLED']) {
      assert.throws(
        () => read.serviceUrl(name, ['postgres:']),
        (error: Error) => error.message.startsWith(`${name} must be a`) && !error.message.includes('s3cret-pw'),
      );
    }
  });
});
