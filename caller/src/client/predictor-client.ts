import { randomUUID } from 'node:crypto';
import type { AccessToken, TokenSource } from '../tokens/token-source.js';
import { PredictorApiError, PredictorUnreachableError, type Problem } from './errors.js';

export type IrisRow = [number, number, number, number];

export interface PredictResponse {
  id: string;
  model: string;
  created: number;
  predictions: { label: string; probabilities: Record<string, number> }[];
}

export interface PredictorClientOptions {
  /** Base URL of the predictor, e.g. http://localhost:8080. */
  baseUrl: string;
  tokens: Pick<TokenSource, 'getToken' | 'invalidate'>;
  /** Idempotency key of a new logical prediction. Default: a random UUID v4. */
  newIdempotencyKey?: () => string;
  fetch?: typeof fetch;
}

export interface PredictOptions {
  /** Reuse a key to make a retried logical prediction recognisable. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

/** Calls the predictor with a bearer token; one Idempotency-Key per logical prediction. */
export class PredictorClient {
  readonly #options: PredictorClientOptions;
  readonly #fetch: typeof fetch;

  constructor(options: PredictorClientOptions) {
    this.#options = { ...options, baseUrl: options.baseUrl.replace(/\/+$/, '') };
    this.#fetch = options.fetch ?? fetch;
  }

  async predict(inputs: IrisRow[], options: PredictOptions = {}): Promise<PredictResponse> {
    const idempotencyKey = options.idempotencyKey ?? (this.#options.newIdempotencyKey ?? randomUUID)();
    return (await this.#send('POST', '/v1/predict', { inputs }, idempotencyKey, options.signal)) as PredictResponse;
  }

  async listModels(signal?: AbortSignal): Promise<unknown> {
    return this.#send('GET', '/v1/models', undefined, undefined, signal);
  }

  async #send(method: string, path: string, body: unknown, idempotencyKey: string | undefined, signal: AbortSignal | undefined): Promise<unknown> {
    // An expired or revoked token gets one refresh and one replay with the same key; a second 401 is final.
    for (let attempt = 1; ; attempt += 1) {
      const token = await this.#options.tokens.getToken();
      const response = await this.#attempt(method, path, body, idempotencyKey, token, signal);
      if (response.ok) return response.json();
      const problem = await readProblem(response);
      const authError = bearerError(response.headers.get('www-authenticate'));
      if (response.status === 401 && attempt === 1) {
        this.#options.tokens.invalidate(token);
        continue;
      }
      throw new PredictorApiError(response.status, problem, authError, attempt);
    }
  }

  async #attempt(method: string, path: string, body: unknown, idempotencyKey: string | undefined, token: AccessToken, signal: AbortSignal | undefined): Promise<Response> {
    const url = `${this.#options.baseUrl}${path}`;
    const headers: Record<string, string> = { authorization: `Bearer ${token.value}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (idempotencyKey !== undefined) headers['idempotency-key'] = idempotencyKey;
    try {
      return await this.#fetch(url, { method, headers, body: body === undefined ? null : JSON.stringify(body), signal: signal ?? null });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new PredictorUnreachableError(url, { cause: error });
    }
  }
}

async function readProblem(response: Response): Promise<Problem | undefined> {
  try {
    return (await response.json()) as Problem;
  } catch {
    return undefined;
  }
}

/** The `error` attribute of an RFC 6750 Bearer challenge. */
export function bearerError(header: string | null): string | undefined {
  return header?.match(/\berror="([^"]*)"/)?.[1];
}
