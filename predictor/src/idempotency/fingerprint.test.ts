import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fingerprint, isValidIdempotencyKey, parseIdempotencyKeyHeader } from './fingerprint.js';

describe('fingerprint', () => {
  it('is the SHA-256 hex of the request, the same for the same request', () => {
    const value = fingerprint('POST', '/v1/predict', '{"features":[5.1,3.5,1.4,0.2]}');
    assert.match(value, /^[0-9a-f]{64}$/);
    assert.equal(fingerprint('POST', '/v1/predict', '{"features":[5.1,3.5,1.4,0.2]}'), value);
  });

  it('differs when the method, the route or the body differs', () => {
    const base = fingerprint('POST', '/v1/predict', '{}');
    assert.notEqual(fingerprint('PUT', '/v1/predict', '{}'), base);
    assert.notEqual(fingerprint('POST', '/v2/predict', '{}'), base);
    assert.notEqual(fingerprint('POST', '/v1/predict', '{ }'), base);
  });

  it('cannot be forged by moving characters between route and body', () => {
    assert.notEqual(fingerprint('POST', '/v1/predict', 'x'), fingerprint('POST', '/v1/predic', 'tx'));
    assert.notEqual(fingerprint('POST', '/a\n', 'b'), fingerprint('POST', '/a', '\nb'));
  });
});

describe('isValidIdempotencyKey', () => {
  it('accepts 1 to 255 printable ASCII characters', () => {
    assert.equal(isValidIdempotencyKey('a'), true);
    assert.equal(isValidIdempotencyKey('8e03978e-40d5-43e8-bc93-6894a57f9324'), true);
    assert.equal(isValidIdempotencyKey(' !"~ '), true);
    assert.equal(isValidIdempotencyKey('k'.repeat(255)), true);
  });

  for (const [name, key] of [
    ['an empty key', ''],
    ['256 characters', 'k'.repeat(256)],
    ['a control character', 'abc\tdef'],
    ['DEL', 'abc\x7f'],
    ['non-ASCII', 'clé'],
  ] as const) {
    it(`rejects ${name}`, () => {
      assert.equal(isValidIdempotencyKey(key), false);
    });
  }
});

describe('parseIdempotencyKeyHeader', () => {
  it('unwraps a structured-field string, as the draft sends it', () => {
    assert.equal(parseIdempotencyKeyHeader('"8e03978e-40d5-43e8-bc93-6894a57f9324"'), '8e03978e-40d5-43e8-bc93-6894a57f9324');
  });

  it('unescapes \\" and \\\\ inside the string', () => {
    assert.equal(parseIdempotencyKeyHeader('"a\\"b\\\\c"'), 'a"b\\c');
  });

  it('accepts a bare key', () => {
    assert.equal(parseIdempotencyKeyHeader('8e03978e-40d5'), '8e03978e-40d5');
  });

  it('ignores surrounding whitespace, as HTTP does', () => {
    assert.equal(parseIdempotencyKeyHeader(' \t"abc" '), 'abc');
    assert.equal(parseIdempotencyKeyHeader(' abc\t'), 'abc');
  });

  it('counts the length of the unwrapped key', () => {
    assert.equal(parseIdempotencyKeyHeader(`"${'k'.repeat(255)}"`), 'k'.repeat(255));
    assert.equal(parseIdempotencyKeyHeader(`"${'k'.repeat(256)}"`), undefined);
  });

  for (const [name, value] of [
    ['an empty value', ''],
    ['an empty string', '""'],
    ['an unterminated string', '"abc'],
    ['text after the string', '"abc"def'],
    ['parameters after the string', '"abc";p=1'],
    ['an unknown escape', '"a\\nb"'],
    ['a bare backslash at the end', '"abc\\'],
    ['a control character in the string', '"a\tb"'],
    ['non-ASCII in the string', '"clé"'],
    ['non-ASCII in a bare key', 'clé'],
  ] as const) {
    it(`rejects ${name}`, () => {
      assert.equal(parseIdempotencyKeyHeader(value), undefined);
    });
  }
});
