import { assertIssuerTransport } from '../tokens/token-source.js';
import { networkCause } from '../tokens/token-errors.js';

/** RFC 9728 section 3: where a protected resource serves its metadata. */
export const RESOURCE_METADATA_PATH = '/.well-known/oauth-protected-resource';

/** The members of RFC 9728 section 2 the caller reads; others are kept as they are. */
export interface ProtectedResourceMetadata {
  resource: string;
  authorization_servers?: string[];
  scopes_supported?: string[];
  bearer_methods_supported?: string[];
  dpop_signing_alg_values_supported?: string[];
  dpop_bound_access_tokens_required?: boolean;
  [member: string]: unknown;
}

/**
 * Discovery from the predictor failed. `code`: `metadata_not_found` (no metadata there),
 * `invalid_metadata` (not a metadata document), `resource_mismatch` (metadata for another
 * resource: RFC 9728 section 3.3 forbids using it), `no_authorization_server` (it names none),
 * `network_error` (no answer). All but the last are configuration to fix, not retry.
 */
export class ResourceMetadataError extends Error {
  override name = 'ResourceMetadataError';

  constructor(
    message: string,
    readonly code: 'metadata_not_found' | 'invalid_metadata' | 'resource_mismatch' | 'no_authorization_server' | 'network_error',
    /** The URL the metadata was fetched from. */
    readonly url: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface ResourceDiscoveryOptions {
  /** The URL the predictor is reached at (PREDICTOR_URL); its metadata is fetched from there. */
  predictorUrl: string;
  /**
   * The resource identifier the metadata must be for (RFC 9728 section 3.3). Default: `predictorUrl`.
   * Give the predictor's audience (PREDICTOR_AUDIENCE) when it is not the URL it is reached at
   * (a proxy in front, tests on ephemeral ports): the comparison is then with what you configured,
   * never with what the server says.
   */
  expectedResource?: string | undefined;
  /** Plain http beyond loopback (see `assertIssuerTransport`): the metadata says where the credentials go. */
  allowInsecureHttp?: boolean;
  /** Timeout of the request (in milliseconds). Default 10 000. */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

/** What the predictor's metadata says, checked. */
export interface DiscoveredResource {
  metadataUrl: string;
  metadata: ProtectedResourceMetadata;
  /** The resource identifier (= `expectedResource`): the token request's `resource` (RFC 8707). */
  resource: string;
  /** The first of `authorization_servers`: the issuer to ask for tokens. */
  issuer: string;
}

/**
 * RFC 9728 section 3.1: the well-known path goes between the host and any path of the resource's
 * URL (https://api.example/v2 → https://api.example/.well-known/oauth-protected-resource/v2).
 */
export function resourceMetadataUrl(resourceUrl: string): string {
  const url = new URL(resourceUrl);
  return `${url.origin}${RESOURCE_METADATA_PATH}${url.pathname.replace(/\/+$/, '')}`;
}

/** Two resource identifiers are the same when their parsed URLs are (case of scheme and host, default port, an empty path as "/"). */
export function sameResource(a: string, b: string): boolean {
  try {
    return new URL(a).href === new URL(b).href;
  } catch {
    return false;
  }
}

/**
 * Starting from the predictor's URL alone: reads its protected-resource metadata, checks that
 * it describes the resource expected (RFC 9728 section 3.3: `resource` identical to the identifier
 * the metadata URL was made from, here `expectedResource`, by default that URL), and returns the
 * authorization server to get tokens from. The check is what keeps a server from sending this
 * caller, with its credentials, to an authorization server of its choosing for another resource.
 */
export async function discoverAuthorizationServer(options: ResourceDiscoveryOptions): Promise<DiscoveredResource> {
  assertIssuerTransport(options.predictorUrl, options.allowInsecureHttp ?? false);
  const metadataUrl = resourceMetadataUrl(options.predictorUrl);
  const expected = options.expectedResource ?? options.predictorUrl;
  let response: Response;
  try {
    response = await (options.fetch ?? fetch)(metadataUrl, { headers: { accept: 'application/json' }, redirect: 'manual', signal: AbortSignal.timeout(options.timeoutMs ?? 10_000) });
  } catch (error) {
    throw new ResourceMetadataError(`predictor unreachable at ${metadataUrl}: ${networkCause(error)}`, 'network_error', metadataUrl, { cause: error });
  }
  if (response.status === 404 || response.status === 410) {
    await response.body?.cancel();
    throw new ResourceMetadataError(`no protected resource metadata at ${metadataUrl} (${response.status}): set ISSUER to the authorization server`, 'metadata_not_found', metadataUrl);
  }
  if (response.status !== 200) {
    await response.body?.cancel();
    throw new ResourceMetadataError(`the protected resource metadata at ${metadataUrl} answered ${response.status}, not 200`, 'invalid_metadata', metadataUrl);
  }
  let metadata: ProtectedResourceMetadata;
  try {
    metadata = (await response.json()) as ProtectedResourceMetadata;
  } catch (error) {
    throw new ResourceMetadataError(`the protected resource metadata at ${metadataUrl} is not JSON`, 'invalid_metadata', metadataUrl, { cause: error });
  }
  if (typeof metadata !== 'object' || metadata === null || typeof metadata.resource !== 'string') {
    throw new ResourceMetadataError(`the protected resource metadata at ${metadataUrl} has no "resource"`, 'invalid_metadata', metadataUrl);
  }
  if (!sameResource(metadata.resource, expected)) {
    const from = options.expectedResource === undefined ? `the predictor URL ${options.predictorUrl}` : `the configured audience ${expected}`;
    throw new ResourceMetadataError(
      `the protected resource metadata at ${metadataUrl} is for the resource ${metadata.resource}, not ${from} (RFC 9728 section 3.3: not used). ` +
        `If ${metadata.resource} is this predictor's audience, set PREDICTOR_AUDIENCE=${metadata.resource}; or set ISSUER instead of discovering it`,
      'resource_mismatch',
      metadataUrl,
    );
  }
  const issuer = Array.isArray(metadata.authorization_servers) ? metadata.authorization_servers[0] : undefined;
  if (typeof issuer !== 'string' || !URL.canParse(issuer)) {
    throw new ResourceMetadataError(`the protected resource metadata at ${metadataUrl} names no authorization server ("authorization_servers"): set ISSUER`, 'no_authorization_server', metadataUrl);
  }
  return { metadataUrl, metadata, resource: metadata.resource, issuer };
}
