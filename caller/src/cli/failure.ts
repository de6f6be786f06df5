import { ConfigError } from '@m2m/common';
import { PredictorApiError, PredictorCallError, PredictorUnreachableError, QuotaExhaustedError, RetryBudgetExhaustedError } from '../client/errors.js';
import { DPoPKeyError } from '../dpop/dpop-key.js';
import { ResourceMetadataError } from '../discovery/resource-metadata.js';
import { TokenRequestError } from '../tokens/token-errors.js';
import { ExitCode } from './exit-codes.js';

/** Input the CLI could not use (not JSON, not rows, unreadable file). */
export class InputError extends Error {
  override name = 'InputError';
}

/** The exit code and the one-line message for any failure of a call. */
export function describeFailure(error: unknown): { code: ExitCode; message: string } {
  if (error instanceof ConfigError) return { code: ExitCode.configuration, message: error.message };
  if (error instanceof InputError) return { code: ExitCode.invalidRequest, message: error.message };
  if (error instanceof DPoPKeyError) return { code: ExitCode.configuration, message: error.message };
  if (error instanceof ResourceMetadataError) return { code: error.code === 'network_error' ? ExitCode.unreachable : ExitCode.configuration, message: error.message };
  if (error instanceof TokenRequestError) {
    if (error.code === 'network_error') return { code: ExitCode.unreachable, message: error.message };
    if (['insecure_transport', 'metadata_not_found', 'issuer_mismatch', 'dpop_not_supported'].includes(error.code)) return { code: ExitCode.configuration, message: error.message };
    if (error.code === 'invalid_scope' || error.code === 'unauthorized_client') return { code: ExitCode.authorization, message: error.message };
    if (error.retryable) return { code: ExitCode.retriesExhausted, message: error.message };
    return { code: ExitCode.authentication, message: error.message };
  }
  if (error instanceof PredictorApiError) {
    if (error.status === 401) return { code: ExitCode.authentication, message: error.message };
    if (error.status === 403) return { code: ExitCode.authorization, message: error.message };
    if ([400, 413, 415, 422].includes(error.status)) return { code: ExitCode.invalidRequest, message: error.message };
    return { code: ExitCode.unexpected, message: error.message };
  }
  if (error instanceof QuotaExhaustedError) return { code: ExitCode.quotaExhausted, message: error.message };
  // Before "unreachable": a budget that ran dry on lost answers does not mean the predictor is down.
  if (error instanceof RetryBudgetExhaustedError) return { code: ExitCode.retryBudgetExhausted, message: error.message };
  if (error instanceof PredictorUnreachableError) return { code: ExitCode.unreachable, message: error.message };
  if (error instanceof PredictorCallError) return { code: ExitCode.retriesExhausted, message: error.message };
  return { code: ExitCode.unexpected, message: `unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}` };
}
