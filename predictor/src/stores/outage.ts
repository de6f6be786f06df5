import { redactUrl } from '@m2m/common';
import { ReplyError } from 'ioredis';
import pg from 'pg';

/**
 * Whether an error of a shared store means its engine cannot be used now (an outage: the
 * failure policy answers, the store is marked down) rather than a failure of the one
 * request that met it (a rejected command, a conflict, a bug: 503 for that request only).
 */
export type OutageClassifier = (error: unknown) => boolean;

/**
 * Redis: every error that is not a reply of the server is an outage, whatever its class
 * (ioredis's MaxRetriesPerRequestError, AbortError, ClusterAllFailedError, ParserError,
 * "Connection is closed.", "Stream isn't writeable…", "Command timed out", socket errors),
 * and so are the replies that say the server cannot serve now (REDIS_OUTAGE_REPLY). A
 * script error or any other reply is the request's own, and so is a bug (a TypeError…).
 */
export function isRedisOutage(error: unknown): boolean {
  if (error instanceof ReplyError) return REDIS_OUTAGE_REPLY.test((error as Error).message);
  return !isBug(error);
}

/**
 * PostgreSQL: every error that is not a message of the server (`pg.DatabaseError`) is an
 * outage, whatever its class ("Connection terminated…", "…is not queryable", "Query read
 * timeout", "timeout exceeded when trying to connect", ECONNRESET…), and so is a server
 * message whose SQLSTATE says the server cannot serve now (isOutageSqlState) or that has none
 * (pg-protocol's "received invalid response": bytes that are not the protocol). A constraint
 * violation or any other SQLSTATE is the request's own, and so is a bug (a TypeError…).
 */
export function isPostgresOutage(error: unknown): boolean {
  if (error instanceof pg.DatabaseError) return error.code === undefined || isOutageSqlState(error.code);
  return !isBug(error);
}

/**
 * The SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) that mean
 * the server cannot serve now, not that this statement is wrong: class 08 connection
 * exception, 28 invalid authorization (credentials refused at connect), 3D000 no such
 * database (at connect), 53 insufficient resources (disk, memory, too many connections),
 * 57 operator intervention (query_canceled by statement_timeout, admin or crash shutdown,
 * cannot connect now, database dropped, idle session timeout), 58 system error (I/O),
 * 25006 read-only transaction (a failover left the pool on a standby).
 */
export function isOutageSqlState(code: string): boolean {
  return /^(08|28|53|57|58)/.test(code) || code === '3D000' || code === '25006';
}

/**
 * Replies of a Redis that is loading its data set, busy with a script, cut off from its
 * primary, read-only (a replica after failover), out of memory or unable to persist, without
 * a cluster quorum, or refusing this client's credentials or one more connection.
 */
const REDIS_OUTAGE_REPLY =
  /^(LOADING|BUSY|MASTERDOWN|READONLY|TRYAGAIN|CLUSTERDOWN|OOM|MISCONF|NOREPLICAS|NOAUTH|WRONGPASS|NOPERM)\b|^ERR max number of clients reached/;

/** Node's codes for a socket that cannot connect or was lost, and TLS failures. */
const NETWORK_CODE =
  /^(ECONNREFUSED|ECONNRESET|ECONNABORTED|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|EHOSTDOWN|ENETUNREACH|ENETDOWN|ENETRESET|ERR_STREAM_DESTROYED|ERR_STREAM_WRITE_AFTER_END|ERR_SOCKET_CLOSED|ERR_SSL_\w+|ERR_TLS_\w+)$/;

/** redis-errors' classes that ioredis raises for a lost connection, never for a reply. */
const REDIS_CONNECTION_ERROR_NAMES = new Set(['MaxRetriesPerRequestError', 'AbortError', 'InterruptError', 'ParserError', 'ClusterAllFailedError']);

/** The client-side messages of ioredis, pg and pg-pool for a connection lost, stuck or unusable. */
const CONNECTION_MESSAGE = new RegExp(
  [
    // ioredis
    'Connection is closed\\.',
    "Stream isn't writeable",
    'Command timed out',
    'Command aborted due to connection close',
    'Socket timeout',
    'None of startup nodes is available',
    "Cluster isn't ready",
    'Cluster is (disconnected|disconnecting|ended)',
    'Failed to refresh slots cache',
    // pg, pg-pool
    'Connection terminated',
    'is not queryable',
    'Query read timeout',
    'timeout exceeded when trying to connect',
    'Cannot use a pool after calling end',
    'Received unexpected \\w+ message from backend',
    'received invalid response',
    // Node's system errors, when they arrive without their code
    '\\b(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN)\\b',
  ].join('|'),
);

/**
 * The classifier for a store whose engine is not known: recognises both engines' outages by
 * class name, code and message. Narrower than the engine's own classifier (an unknown error
 * is not an outage here), so open.ts gives each guard its engine's.
 */
export function isOutage(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const { code } = error as { code?: unknown };
  if (typeof code === 'string') {
    if (NETWORK_CODE.test(code)) return true;
    if (/^[0-9A-Z]{5}$/.test(code) && isOutageSqlState(code)) return true;
  }
  if (REDIS_CONNECTION_ERROR_NAMES.has(error.name)) return true;
  if (error instanceof AggregateError && error.errors.some(isOutage)) return true;
  return REDIS_OUTAGE_REPLY.test(error.message) || CONNECTION_MESSAGE.test(error.message);
}

/**
 * An error a store raises for one request's own reasons (e.g. a claim that kept losing races
 * to other requests): the engine works, so it is never an outage.
 */
export class StoreRequestError extends Error {
  override name = 'StoreRequestError';
}

/**
 * A fault of the code, not of the engine: a value that is not an Error, or one of the
 * built-in classes JavaScript raises for a wrong call (pg's "Client was passed a null or
 * undefined query" is a TypeError). It must not mark a healthy store down.
 */
function isBug(error: unknown): boolean {
  return (
    !(error instanceof Error) ||
    error instanceof StoreRequestError ||
    error instanceof TypeError ||
    error instanceof RangeError ||
    error instanceof ReferenceError ||
    error instanceof SyntaxError ||
    error instanceof EvalError ||
    error instanceof URIError
  );
}

/** An error's message fit for a log line: the password of any URL in it is masked. */
export function describeStoreError(error: unknown): { reason: string; error: string; code?: string } {
  const message = error instanceof Error ? error.message || error.name : String(error);
  const reason = message.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s'"<>]+/gi, (url) => redactUrl(url));
  const name = error instanceof Error ? error.name : typeof error;
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? { reason, error: name, code } : { reason, error: name };
}
