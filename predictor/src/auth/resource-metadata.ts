/** RFC 9728 section 3: where a protected resource serves its metadata. */
export const RESOURCE_METADATA_PATH = '/.well-known/oauth-protected-resource';

export interface ProtectedResourceOptions {
  /** The resource identifier: the tokens' audience, which clients send as `resource` (RFC 8707). */
  resource: string;
  /** The URL clients reach the predictor at: the metadata URL is built from it. */
  publicUrl: string;
  /** The issuers whose tokens are accepted. */
  authorizationServers: string[];
  scopes: string[];
  /** `dpop_signing_alg_values_supported`; undefined: DPoP not accepted. */
  dpopAlgorithms?: readonly string[] | undefined;
  /** `resource_documentation`; undefined: not advertised. */
  documentationUrl?: string | undefined;
}

/**
 * RFC 9728 section 3.1: the well-known path goes between the host and any path of the
 * resource's URL (https://api.example/v2 → https://api.example/.well-known/oauth-protected-resource/v2).
 */
export function resourceMetadataUrl(publicUrl: string): string {
  const url = new URL(publicUrl);
  const path = url.pathname.replace(/\/+$/, '');
  return `${url.origin}${RESOURCE_METADATA_PATH}${path}`;
}

/** The metadata document (RFC 9728 section 2). */
export function protectedResourceMetadata(options: ProtectedResourceOptions): Record<string, unknown> {
  return {
    resource: options.resource,
    authorization_servers: options.authorizationServers,
    scopes_supported: options.scopes,
    // Only in the Authorization header (RFC 6750 section 2.1): never in a body or a query.
    bearer_methods_supported: ['header'],
    ...(options.dpopAlgorithms ? { dpop_signing_alg_values_supported: [...options.dpopAlgorithms] } : {}),
    // Bearer stays accepted for tokens without cnf; a bound token needs its proof whatever this says.
    dpop_bound_access_tokens_required: false,
    ...(options.documentationUrl ? { resource_documentation: options.documentationUrl } : {}),
  };
}
