import { createHash } from 'node:crypto';

/** Longest key accepted, in characters (CONTRACT.md section 4). */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;

/**
 * What makes two requests "the same request" under one key: SHA-256 (hex) of the method,
 * the route and the canonical body. A JSON array separates them unambiguously, so no
 * choice of route and body can collide with another split of the same characters.
 */
export function fingerprint(method: string, route: string, canonicalBody: string): string {
  return createHash('sha256').update(JSON.stringify([method, route, canonicalBody])).digest('hex');
}

/** 1 to 255 printable ASCII characters (0x20–0x7E). */
export function isValidIdempotencyKey(key: string): boolean {
  return key.length >= 1 && key.length <= MAX_IDEMPOTENCY_KEY_LENGTH && PRINTABLE_ASCII.test(key);
}

/**
 * The key carried by an `Idempotency-Key` header value, or undefined if it is not a valid key.
 * The draft defines the value as a structured-field string (RFC 8941 section 3.3.3), e.g.
 * `"8e03978e-40d5"`, which is unwrapped and unescaped; a bare value is accepted as the key itself,
 * as most clients send it that way.
 */
export function parseIdempotencyKeyHeader(value: string): string | undefined {
  // RFC 9110 section 5.5: leading and trailing whitespace is not part of a field value.
  const trimmed = value.replace(/^[ \t]+|[ \t]+$/g, '');
  const key = trimmed.startsWith('"') ? parseStructuredFieldString(trimmed) : trimmed;
  return key !== undefined && isValidIdempotencyKey(key) ? key : undefined;
}

/** RFC 8941 section 4.2.5, for a value that is exactly one string with no parameters. */
function parseStructuredFieldString(value: string): string | undefined {
  let result = '';
  for (let index = 1; index < value.length; index += 1) {
    const char = value[index] as string;
    if (char === '\\') {
      index += 1;
      const escaped = value[index];
      if (escaped !== '"' && escaped !== '\\') return undefined;
      result += escaped;
    } else if (char === '"') {
      return index === value.length - 1 ? result : undefined;
    } else if (char < '\x20' || char > '\x7e') {
      return undefined;
    } else {
      result += char;
    }
  }
  return undefined; // no closing quote
}
