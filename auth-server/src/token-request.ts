import { parse, type ParsedUrlQuery } from 'node:querystring';

/**
 * A token request's form body as oidc-provider parses it (node:querystring): a repeated
 * parameter stays an array, so that oidc-provider can refuse it (RFC 6749 section 3.2).
 */
export type TokenForm = ParsedUrlQuery;

export function parseTokenForm(body: string): TokenForm {
  return parse(body);
}

/** A single-valued parameter of the form; undefined when absent or repeated. */
export function single(form: TokenForm, name: string): string | undefined {
  const value = form[name];
  return typeof value === 'string' ? value : undefined;
}

/**
 * RFC 6749 section 3.2: "Request and response parameters MUST NOT be included more than
 * once." oidc-provider refuses a parameter repeated in the body, but on a POST it ignores
 * the query string: a parameter repeated there, or present in both the query and the body,
 * would pass unseen. Returns the first such name.
 */
export function repeatedQueryParameter(query: string, form: TokenForm): string | undefined {
  const seen = new Set<string>();
  for (const name of new URLSearchParams(query).keys()) {
    if (seen.has(name) || form[name] !== undefined) return name;
    seen.add(name);
  }
  return undefined;
}

/**
 * No client authentication at all: no Authorization header, no secret or assertion in the
 * body and no client_id. RFC 6749 section 5.2 names this `invalid_client` ("no client
 * authentication included"); oidc-provider answers 400 `invalid_request`. Any request that
 * names a client or presents a credential is left to oidc-provider, which answers 401.
 */
export function presentsNoClient(authorization: string | undefined, form: TokenForm): boolean {
  return authorization === undefined && ['client_id', 'client_secret', 'client_assertion'].every((name) => form[name] === undefined);
}
