/** One challenge of a `WWW-Authenticate` field: its scheme (as sent) and its parameters (names in lower case). */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/;

/**
 * The challenges of a `WWW-Authenticate` field (RFC 9110 section 11.6.1): `Bearer realm="x",
 * error="invalid_token", DPoP algs="ES256", error="use_dpop_nonce"` is two challenges, each with
 * its own `error`. Quoted strings may hold commas and escaped quotes. token68 credentials are
 * not read (no scheme here uses them); reading stops at anything it cannot parse.
 */
export function parseChallenges(header: string | null | undefined): Challenge[] {
  const challenges: Challenge[] = [];
  let rest = header ?? '';
  const take = (pattern: RegExp) => {
    const match = pattern.exec(rest);
    if (match) rest = rest.slice(match[0].length);
    return match;
  };
  for (;;) {
    take(/^[\s,]*/);
    const scheme = take(TOKEN);
    if (!scheme) return challenges;
    const challenge: Challenge = { scheme: scheme[0], params: {} };
    challenges.push(challenge);
    // name=value pairs, comma-separated, until a token not followed by "=": the next scheme.
    for (;;) {
      const before = rest;
      take(/^[\s,]*/);
      const name = take(/^([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*/);
      if (!name) {
        rest = before;
        break;
      }
      const quoted = take(/^"((?:[^"\\]|\\.)*)"/);
      const token = quoted ? undefined : take(TOKEN);
      if (!quoted && !token) return challenges;
      challenge.params[name[1]!.toLowerCase()] = quoted ? quoted[1]!.replace(/\\(.)/g, '$1') : token![0];
    }
  }
}

/** Whether the answer asks for a DPoP proof with the server's nonce (RFC 9449 section 9): a DPoP challenge with `error="use_dpop_nonce"`. */
export function asksForDpopNonce(response: Response): boolean {
  return parseChallenges(response.headers.get('www-authenticate')).some((challenge) => challenge.scheme.toLowerCase() === 'dpop' && challenge.params['error'] === 'use_dpop_nonce');
}
