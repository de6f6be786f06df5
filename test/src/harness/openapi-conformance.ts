import { Ajv2020 } from 'ajv/dist/2020.js';

type Json = Record<string, any>;

/** Where an answer came from: an operation of the document, or one of its path-independent responses (404, 405). */
export type Documented = { method: string; path: string } | { component: 'NotFound' | 'MethodNotAllowed' };

/** Headers that, when a response carries them, the document must list for that response. */
const GOVERNED_HEADERS = ['retry-after', 'ratelimit', 'ratelimit-policy', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'idempotent-replayed', 'www-authenticate', 'dpop-nonce', 'allow'];

/**
 * Checks real answers against an OpenAPI 3.1 document: the status is documented for the
 * operation, the media type is one it lists, the body validates against its schema (ajv,
 * JSON Schema 2020-12, the dialect of OpenAPI 3.1), every required header is there and every
 * rate-limit, retry, idempotency or challenge header sent is documented. `checked` collects
 * the statuses seen, so a test can say which it covered.
 */
export class OpenApiConformance {
  readonly checked = new Set<number>();
  readonly #document: Json;
  readonly #ajv = new Ajv2020({ strict: false, allErrors: true });
  static readonly #ID = 'urn:predictor:openapi';

  constructor(document: Json) {
    this.#document = document;
    // The document itself is the root the schemas' `#/components/schemas/…` references point into.
    this.#ajv.addSchema({ $id: OpenApiConformance.#ID, components: document['components'] });
  }

  /** Throws an Error naming what does not conform; returns the parsed body. */
  async check(response: Response, where: Documented): Promise<unknown> {
    const label = 'component' in where ? `${where.component} (${response.url})` : `${where.method.toUpperCase()} ${where.path}`;
    const responses = 'component' in where ? undefined : (this.#document['paths']?.[where.path]?.[where.method.toLowerCase()]?.['responses'] as Json | undefined);
    if (!('component' in where) && !responses) throw new Error(`${label} is not an operation of the document`);
    const documented = this.#resolve('component' in where ? { $ref: `#/components/responses/${where.component}` } : (responses![String(response.status)] ?? responses!['default']));
    if (!documented) throw new Error(`${label} answered ${response.status}, which the document does not list (it lists ${Object.keys(responses ?? {}).join(', ')})`);

    const headers = (documented['headers'] ?? {}) as Json;
    const documentedNames = new Set(Object.keys(headers).map((name) => name.toLowerCase()));
    for (const [name, header] of Object.entries(headers)) {
      if (this.#resolve(header)['required'] && !response.headers.has(name)) throw new Error(`${label} ${response.status}: the required header ${name} is missing`);
    }
    for (const name of GOVERNED_HEADERS) {
      if (response.headers.has(name) && !documentedNames.has(name)) throw new Error(`${label} ${response.status}: sends ${name}, which the document does not list for it`);
    }

    const content = (documented['content'] ?? {}) as Json;
    const mediaType = (response.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    const media = content[mediaType] as Json | undefined;
    if (!media) throw new Error(`${label} ${response.status}: content-type ${mediaType || '(none)'} is not one of ${Object.keys(content).join(', ') || '(no content)'}`);
    const text = await response.text();
    const body = mediaType.endsWith('json') ? (JSON.parse(text) as unknown) : text;
    const validate = this.#ajv.compile(this.#absolute(media['schema'] ?? {}));
    if (!validate(body)) throw new Error(`${label} ${response.status}: the body does not match its schema: ${this.#ajv.errorsText(validate.errors)}\n${text.slice(0, 500)}`);
    this.checked.add(response.status);
    return body;
  }

  /** Follows a local `$ref` (responses, headers) to its object. */
  #resolve(value: Json | undefined): Json {
    if (!value || typeof value['$ref'] !== 'string') return value as Json;
    const pointer = (value['$ref'] as string).replace(/^#\//, '').split('/');
    return this.#resolve(pointer.reduce<Json>((node, segment) => node?.[segment.replace(/~1/g, '/').replace(/~0/g, '~')], this.#document));
  }

  /** The schema with its local references made absolute, so ajv resolves them in the document. */
  #absolute(schema: Json): Json {
    return { ...(JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', `"${OpenApiConformance.#ID}#/components/`)) as Json) };
  }
}
