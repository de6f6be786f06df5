import { USAGE_SUBJECT_PREFIX, usageSubject } from '@m2m/common';
import {
  DiscardPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { UsageStreamConflict } from './errors.js';

/** The production stream that holds usage events. */
export const USAGE_STREAM = 'USAGE';
/** The ledger's durable consumer on that stream. */
export const USAGE_CONSUMER_DURABLE = 'usage-ledger';
/** How long the broker remembers a `Nats-Msg-Id` (ms): 2 minutes. */
export const DEFAULT_DUPLICATE_WINDOW_MS = 2 * 60 * 1000;
/** How long the stream keeps an event (ms): 7 days, the longest ledger outage it rides out. */
export const DEFAULT_USAGE_MAX_AGE_MS = 7 * 24 * 60 * 60 * 1000;

// nats-server's JSStreamNameExistErr (seen from 2.9.10): "stream name already in use with a different configuration".
const STREAM_NAME_IN_USE = 10058;

/**
 * Where the events go. Tests pass names of their own so that runs never see each other's
 * messages; everything else keeps the production defaults.
 */
export interface UsageStreamNames {
  /** Stream name. Default `USAGE`. */
  stream?: string;
  /** Subjects are `<prefix>.<client token>`. Default `usage.predictions`. */
  subjectPrefix?: string;
}

export interface UsageStreamOptions extends UsageStreamNames {
  /**
   * The broker's duplicate window (ms), default 2 minutes. A help, not the guarantee: an id
   * re-published after the window (a relay that was down longer) is stored twice, and the
   * consumer's inbox is what counts it once.
   */
  duplicateWindowMs?: number;
  /** Events older than this are deleted (ms), acknowledged or not. Default 7 days. */
  maxAgeMs?: number;
  /**
   * Size cap of the stream (bytes), default -1 (none). When reached, new publishes are
   * refused (`rejected`) rather than old events dropped: the outbox keeps them until there is room.
   */
  maxBytes?: number;
  /** Copies in a cluster. Default 1 (a single server). */
  replicas?: number;
}

/**
 * The stream's configuration. Retention is `limits` (events stay until `maxAgeMs`, whoever
 * consumed them), not `workqueue`: a second consumer (an audit, a replay after a ledger bug)
 * can read the same events, and a consumer recreated from scratch finds them all again.
 */
export function usageStreamConfig(options: UsageStreamOptions = {}): StreamConfig {
  const { stream = USAGE_STREAM, subjectPrefix = USAGE_SUBJECT_PREFIX } = options;
  return {
    name: stream,
    subjects: [`${subjectPrefix}.>`],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.New,
    max_age: nanos(options.maxAgeMs ?? DEFAULT_USAGE_MAX_AGE_MS),
    max_bytes: options.maxBytes ?? -1,
    duplicate_window: nanos(options.duplicateWindowMs ?? DEFAULT_DUPLICATE_WINDOW_MS),
    num_replicas: options.replicas ?? 1,
  } as StreamConfig;
}

/**
 * Creates the stream, or brings an existing one to this configuration. Safe to run from
 * several processes at once: the server answers a create with an identical configuration
 * with the existing stream, so only a changed setting goes through an update.
 * Throws UsageStreamConflict when the stream cannot take the configuration (storage type changed…).
 */
export async function ensureUsageStream(jsm: JetStreamManager, options: UsageStreamOptions = {}): Promise<StreamInfo> {
  const config = usageStreamConfig(options);
  try {
    return await jsm.streams.add(config);
  } catch (error) {
    if (!(error instanceof JetStreamApiError) || error.code !== STREAM_NAME_IN_USE) throw error;
  }
  const { name, ...update } = config;
  try {
    return await jsm.streams.update(name, update);
  } catch (error) {
    if (!(error instanceof JetStreamApiError)) throw error;
    throw new UsageStreamConflict(`stream ${name} exists with settings this configuration cannot update: ${error.message}`, { cause: error });
  }
}

/** `usageSubject` under another prefix (a test's); the production prefix gives `usageSubject` itself. */
export function usageSubjectIn(clientId: string, subjectPrefix: string = USAGE_SUBJECT_PREFIX): string {
  return subjectPrefix + usageSubject(clientId).slice(USAGE_SUBJECT_PREFIX.length);
}
