import { resolver, type GenerateSpecOptions } from 'hono-openapi';
import { ROUTE_SCOPES } from '../auth/scopes.js';
import { ProblemSchema } from '../http/problem-schema.js';
import { MAX_IDEMPOTENCY_KEY_LENGTH } from '../idempotency/fingerprint.js';

/**
 * The reusable parts of the OpenAPI document: security schemes, headers, parameters and the
 * responses any path can give (404, 405, 500).
 */

/** The names of the security schemes in `components.securitySchemes`. */
export const SECURITY_SCHEMES = { oauth2: 'oauth2', dpop: 'dpop', apiKey: 'apiKey' } as const;

export const componentRef = (kind: 'headers' | 'parameters' | 'responses' | 'schemas', name: string) => ({ $ref: `#/components/${kind}/${name}` });

export interface ComponentOptions {
  /** The token endpoint of the OAuth 2.0 client credentials flow: `${ISSUER}/token`. */
  tokenUrl: string;
  /** The `alg`s DPoP proofs may use; undefined: DPoP is not accepted. */
  dpopAlgorithms: readonly string[] | undefined;
  /** X-API-Key is accepted. */
  apiKeys: boolean;
  /** POST /v1/predict refuses a request without Idempotency-Key. */
  requireIdempotencyKey: boolean;
}

type Components = NonNullable<GenerateSpecOptions['documentation']['components']>;
type HeaderObject = Exclude<NonNullable<Components['headers']>[string], { $ref: string }>;

const integerHeader = (description: string, required = false): HeaderObject => ({ description, required, schema: { type: 'integer', minimum: 0 } });
const stringHeader = (description: string, required = false): HeaderObject => ({ description, required, schema: { type: 'string' } });

const RATE_LIMIT_NOTE = 'Sent on every response to an authenticated client; on a response that was not charged it shows the current state.';

export function components(options: ComponentOptions): Components {
  const securitySchemes: NonNullable<Components['securitySchemes']> = {
    [SECURITY_SCHEMES.oauth2]: {
      type: 'oauth2',
      description:
        'OAuth 2.0 client credentials (RFC 6749 section 4.4) at the issuer\'s token endpoint, with `resource` set to the predictor\'s audience (RFC 8707); ' +
        'send the JWT access token (RFC 9068) as `Authorization: Bearer <token>`. The token\'s `plan` claim selects the rate-limit plan.',
      flows: {
        clientCredentials: {
          tokenUrl: options.tokenUrl,
          scopes: { [ROUTE_SCOPES.predict]: 'POST /v1/predict', [ROUTE_SCOPES.listModels]: 'GET /v1/models' },
        },
      },
    },
  };
  if (options.dpopAlgorithms) {
    securitySchemes[SECURITY_SCHEMES.dpop] = {
      type: 'http',
      scheme: 'DPoP',
      description:
        `RFC 9449: a DPoP-bound access token (requested from ${options.tokenUrl} with a DPoP proof; its \`cnf.jkt\` names the key) sent as \`Authorization: DPoP <token>\`, ` +
        `with a fresh proof of the same key in the \`DPoP\` header (\`htm\`, \`htu\`, \`ath\`, \`iat\`, \`jti\`; algorithms: ${options.dpopAlgorithms.join(', ')}). ` +
        'A DPoP-bound token sent as Bearer is refused.',
    };
  }
  if (options.apiKeys) {
    securitySchemes[SECURITY_SCHEMES.apiKey] = {
      type: 'apiKey',
      in: 'header',
      name: 'X-API-Key',
      description: 'An API key (`m2mk_<id>_<secret>`, created with `npm run apikey`) with its own scopes and plan. Never together with an access token (400).',
    };
  }

  const headers: Record<string, HeaderObject> = {
    'X-Request-Id': stringHeader('The client\'s `X-Request-Id` if well-formed (1–128 of `A-Za-z0-9_.:@/+=-`), else a new UUID. On every response.', true),
    RateLimit: stringHeader(`draft-ietf-httpapi-ratelimit-headers: each policy's remaining quota and seconds to reset, e.g. \`"burst";r=29;t=1, "daily";r=99999;t=43200\`. ${RATE_LIMIT_NOTE}`),
    'RateLimit-Policy': stringHeader(`draft-ietf-httpapi-ratelimit-headers: each policy's quota and window in seconds, e.g. \`"burst";q=30;w=3, "daily";q=100000;w=86400\`. ${RATE_LIMIT_NOTE}`),
    'X-RateLimit-Limit': integerHeader(`The quota of the most constrained policy. ${RATE_LIMIT_NOTE}`),
    'X-RateLimit-Remaining': integerHeader(`What is left of it. ${RATE_LIMIT_NOTE}`),
    'X-RateLimit-Reset': integerHeader(`Seconds until it is refilled. ${RATE_LIMIT_NOTE}`),
    'Retry-After': integerHeader('Seconds to wait before retrying (RFC 9110 section 10.2.3), rounded up: never shorter than the real wait.', true),
    'Idempotent-Replayed': { description: '`true` when the answer is the stored one of an earlier request with the same `Idempotency-Key`.', required: false, schema: { type: 'string', enum: ['true'] } },
    'WWW-Authenticate': stringHeader(
      `One challenge per accepted scheme (Bearer${options.dpopAlgorithms ? ', DPoP with `algs`' : ''}), each with \`realm="predictor"\` and \`resource_metadata\` (RFC 9728); the error (\`error\`, \`error_description\`, \`scope\`) on the scheme the request used (RFC 6750 section 3, RFC 9449 section 7.1).`,
    ),
    'DPoP-Nonce': stringHeader('The nonce the next DPoP proof must carry (RFC 9449 section 9), with `error="use_dpop_nonce"`.'),
    Allow: stringHeader('The methods the path answers (`POST`; `GET, HEAD`).', true),
    'Cache-Control': stringHeader('`public, max-age=300`.', true),
  };

  const parameters: NonNullable<Components['parameters']> = {
    'Idempotency-Key': {
      name: 'Idempotency-Key',
      in: 'header',
      required: options.requireIdempotencyKey,
      description:
        'draft-ietf-httpapi-idempotency-key-header: the same key with the same body answers the first execution\'s stored result (never executed twice, not charged twice); ' +
        'with a different body, 422; while the first is still executing, 409. A bare value or a structured-field string (`"…"`); send it in one header line.',
      schema: { type: 'string', minLength: 1, maxLength: MAX_IDEMPOTENCY_KEY_LENGTH, pattern: '^[\\x20-\\x7e]+$' },
    },
    'X-Request-Id': {
      name: 'X-Request-Id',
      in: 'header',
      required: false,
      description: 'Echoed in the response and the logs when well-formed.',
      schema: { type: 'string', maxLength: 128, pattern: '^[\\w.:@/+=-]{1,128}$' },
    },
  };

  const problemContent = { 'application/problem+json': { schema: resolver(ProblemSchema) } };
  const responses = {
    NotFound: { description: `No route for this path (${'`not-found`'}). Any path not in this document, e.g. \`/metrics\` (served on the metrics port only).`, headers: { 'X-Request-Id': componentRef('headers', 'X-Request-Id') }, content: problemContent },
    MethodNotAllowed: {
      description: 'A path of this document with a method it does not answer (`method-not-allowed`), e.g. `GET /v1/predict`; `Allow` lists the methods it answers.',
      headers: { 'X-Request-Id': componentRef('headers', 'X-Request-Id'), Allow: componentRef('headers', 'Allow') },
      content: problemContent,
    },
    InternalError: { description: 'A failure on the predictor\'s side (`internal-error`); safe to retry.', headers: { 'X-Request-Id': componentRef('headers', 'X-Request-Id') }, content: problemContent },
  };

  return { securitySchemes, headers, parameters, responses };
}
