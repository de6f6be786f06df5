import type Provider from 'oidc-provider';

/** Where oidc-provider serves its metadata: RFC 8414's name and OpenID Discovery's, with one content. */
export const METADATA_PATHS = ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration'] as const;

/** The other oidc-provider routes a client-credentials server needs; every route not named here answers 404. */
export const SERVED_ROUTES = ['jwks', 'token'] as const;

/**
 * The metadata fields (RFC 8414 section 2) that are true of this server. oidc-provider
 * also advertises an authorization endpoint, PKCE, ID-token algorithms, claims, response
 * modes and subject types: the browser flows of an OpenID Provider, which this server
 * does not offer. `response_types_supported` is REQUIRED by RFC 8414 (and OpenID
 * Discovery); empty, it says that there is no authorization endpoint to send one to.
 */
export const METADATA_FIELDS = [
  'issuer',
  'token_endpoint',
  'jwks_uri',
  'scopes_supported',
  'response_types_supported',
  'grant_types_supported',
  'token_endpoint_auth_methods_supported',
  'token_endpoint_auth_signing_alg_values_supported',
  // RFC 9449 section 5.1: present when DPoP is on (oidc-provider adds it only then).
  'dpop_signing_alg_values_supported',
] as const;

export interface MachineEndpointsOptions {
  /** `scopes_supported`: the scopes a token can carry (oidc-provider adds `openid`, which it cannot). */
  scopes: readonly string[];
}

/**
 * Narrows an oidc-provider instance to what a machine-to-machine server does: its
 * metadata lists only the fields above, every URL in it is built from the issuer, and
 * the routes that are not served (authorization endpoint and the like) answer 404.
 */
export function restrictToMachineEndpoints(provider: Provider, options: MachineEndpointsOptions): void {
  // oidc-provider builds endpoint URLs from the request (ctx.href: the Host header, or
  // X-Forwarded-* with provider.proxy), so `Host: evil.example` would advertise
  // http://evil.example/jwks and accept client assertions whose audience names it
  // (node_modules/oidc-provider/lib/helpers/oidc_context.js, urlFor). The issuer is
  // configuration: build them from it. Requests are not refused on their Host instead,
  // because replicas behind a load balancer and health checks reach the server under
  // other names (docs/scale-out.md).
  provider.OIDCContext.prototype.urlFor = function urlFromIssuer(name, opt) {
    return provider.urlFor(name, opt);
  };
  const metadataPaths = new Set<string>(METADATA_PATHS);
  // The router matches paths below the listener's root, whatever path the issuer has.
  const served = new Set<string>([...metadataPaths, ...SERVED_ROUTES.map((name) => provider.pathFor(name, { mountPath: '' }))]);
  provider.use(async function machineEndpointsOnly(ctx, next) {
    // Not calling next() leaves Koa's answer: 404 Not Found, as for any unknown path.
    if (!served.has(ctx.path)) return;
    await next();
    if (metadataPaths.has(ctx.path) && ctx.status === 200 && isRecord(ctx.body)) {
      ctx.body = machineMetadata(ctx.body, options.scopes);
    }
  });
}

/** The fields of oidc-provider's discovery document that are true here, with the real scopes. */
export function machineMetadata(document: Record<string, unknown>, scopes: readonly string[]): Record<string, unknown> {
  const metadata: Record<string, unknown> = {};
  for (const field of METADATA_FIELDS) {
    if (document[field] !== undefined) metadata[field] = document[field];
  }
  metadata['scopes_supported'] = [...scopes];
  return metadata;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
