import type { Logger, UsageEvent } from '@m2m/common';
import { jetstreamManager } from '@nats-io/jetstream';
import { connectNats, type NatsHandle } from './connection.js';
import { JetStreamUsagePublisher } from './publisher.js';
import { ensureUsageStream, type UsageStreamNames } from './stream.js';

export interface JetStreamUsageSinkOptions extends UsageStreamNames {
  url: string;
  /** Client name shown by the server (`connz`). */
  name: string;
  logger: Logger;
  /** Deadline of one publish's acknowledgement (ms). Default 5 000. */
  publishTimeoutMs?: number;
}

/**
 * The relay's way into JetStream. It connects on first use, not at start, and again after a
 * failed first connection, so a broker that is down when the predictor starts delays only the
 * events (they wait in the outbox), never the predictor. Once connected, the client reconnects
 * by itself.
 */
export class JetStreamUsageSink {
  readonly #options: JetStreamUsageSinkOptions;
  #connecting: Promise<{ handle: NatsHandle; publisher: JetStreamUsagePublisher }> | undefined;

  constructor(options: JetStreamUsageSinkOptions) {
    this.#options = options;
  }

  /**
   * Publishes the events and resolves with the ids JetStream acknowledged. A round in which
   * nothing was acknowledged rejects with the first failure, so the relay backs off.
   */
  async deliver(events: UsageEvent[]): Promise<ReadonlySet<string>> {
    if (events.length === 0) return new Set();
    const { publisher } = await this.#connected();
    const { acknowledged, failed } = await publisher.publishBatch(events);
    if (acknowledged.size === 0 && failed.length > 0) throw failed[0]!.error;
    return acknowledged;
  }

  async close(): Promise<void> {
    const connecting = this.#connecting;
    this.#connecting = undefined;
    await connecting?.then(({ handle }) => handle.close(), () => {});
  }

  #connected(): Promise<{ handle: NatsHandle; publisher: JetStreamUsagePublisher }> {
    this.#connecting ??= (async () => {
      const { url, name, logger, publishTimeoutMs } = this.#options;
      const handle = await connectNats({ url, name, logger });
      try {
        await ensureUsageStream(await jetstreamManager(handle.nc), this.#names());
      } catch (error) {
        await handle.close();
        throw error;
      }
      return { handle, publisher: new JetStreamUsagePublisher(handle, { ...this.#names(), ...(publishTimeoutMs ? { timeoutMs: publishTimeoutMs } : {}) }) };
    })().catch((error: unknown) => {
      this.#connecting = undefined;
      throw error;
    });
    return this.#connecting;
  }

  #names(): UsageStreamNames {
    const { stream, subjectPrefix } = this.#options;
    return { ...(stream ? { stream } : {}), ...(subjectPrefix ? { subjectPrefix } : {}) };
  }
}
