// Warning Events on guarded Secrets, in the events.k8s.io/v1 API: `regarding` names the Secret and
// repeats are folded into the Event's `series` (count, lastObservedTime) instead of new Events. As in
// client-go's events recorder, repeats are counted locally and the series is written at most once per
// flush interval, so a burst of refusals costs the API server one patch, not one per refusal.
// (events.k8s.io/v1 is the API with a first-class series; it shares storage with core/v1 Events, so
// `kubectl get events` and `kubectl events --for secret/<name>` show them as well.)
// Emission runs in the background with a timeout: it never fails or delays an admission answer.
import type { Logger } from 'pino';
import type { JsonObject } from '../admission/types.js';
import { describeApiError } from '../api-errors.js';
import { raceDeadline } from '../deadline.js';

export interface SecretEvent {
  namespace: string;
  secretName: string;
  /** The Secret's metadata.uid, so the Event names that very object (not a later one of the same name). */
  secretUid?: string | undefined;
  reason: string;
  action: string;
  note: string;
}

/** The two calls the recorder makes; src/audit/events-api.ts implements them on @kubernetes/client-node. */
export interface EventsApi {
  create(namespace: string, event: JsonObject): Promise<void>;
  /** JSON merge patch of one Event; rejects with an error whose `code` is 404 when it is gone. */
  patch(namespace: string, name: string, mergePatch: JsonObject): Promise<void>;
}

export interface SecretEventRecorderOptions {
  api: EventsApi;
  log: Logger;
  /** events.k8s.io/v1 `reportingController`, a qualified name. */
  reportingController: string;
  /** events.k8s.io/v1 `reportingInstance`: this replica (the pod name). */
  reportingInstance: string;
  /** Repeats of the same Secret and reason within this window update one Event. */
  aggregationWindowMs?: number;
  /** Repeats are written to the Event's series at most this often. */
  seriesFlushMs?: number;
  /** Bound on one API call. */
  timeoutMs?: number;
  /** Emissions in flight beyond this are dropped (and counted as failures). */
  maxPending?: number;
  onFailure?: () => void;
  now?: () => number;
}

export const EVENT_NOTE_LIMIT_BYTES = 1024;

interface Series {
  eventName: string;
  count: number;
  lastObservedMs: number;
  /** The count the API server has. */
  writtenCount: number;
}

export class SecretEventRecorder {
  private readonly series = new Map<string, Series>();
  private readonly chains = new Map<string, Promise<void>>();
  private readonly pending = new Set<Promise<void>>();
  /** Series writes waiting for their flush time, by key. */
  private readonly flushes = new Map<string, { timer: NodeJS.Timeout; event: SecretEvent }>();
  private readonly windowMs: number;
  private readonly flushMs: number;
  private readonly timeoutMs: number;
  private readonly maxPending: number;
  private readonly now: () => number;
  private sequence = 0;

  constructor(private readonly options: SecretEventRecorderOptions) {
    this.windowMs = options.aggregationWindowMs ?? 10 * 60_000;
    this.flushMs = options.seriesFlushMs ?? 1_000;
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.maxPending = options.maxPending ?? 100;
    this.now = options.now ?? Date.now;
  }

  /** Queues the Event and returns at once. */
  record(event: SecretEvent): void {
    const log = this.options.log;
    if (this.pending.size >= this.maxPending) {
      log.warn(
        { namespace: event.namespace, secret: event.secretName, reason: event.reason },
        'Event dropped: too many Events in flight',
      );
      this.options.onFailure?.();
      return;
    }
    this.prune();
    const key = `${event.namespace}/${event.secretName}/${event.reason}`;
    const observedMs = this.now();
    this.enqueue(key, event, () => this.emit(key, event, observedMs));
  }

  /**
   * Resolves when every queued Event has been emitted or has failed (tests, shutdown); series waiting for their
   * flush time are written now.
   */
  async idle(): Promise<void> {
    for (;;) {
      for (const key of [...this.flushes.keys()]) this.flush(key);
      if (this.pending.size === 0) return;
      await Promise.allSettled([...this.pending]);
    }
  }

  // Work about one Secret and reason runs in order, so a repeat finds the Event to update.
  private enqueue(key: string, event: SecretEvent, work: () => Promise<void>): void {
    const log = this.options.log;
    const task = (this.chains.get(key) ?? Promise.resolve()).then(work).catch((error: unknown) => {
      this.options.onFailure?.();
      log.warn(
        { namespace: event.namespace, secret: event.secretName, reason: event.reason, error: describeApiError(error) },
        'could not emit a Warning Event on the Secret',
      );
    });
    this.chains.set(key, task);
    this.pending.add(task);
    void task.finally(() => {
      this.pending.delete(task);
      if (this.chains.get(key) === task) this.chains.delete(key);
    });
  }

  private async emit(key: string, event: SecretEvent, now: number): Promise<void> {
    const existing = this.series.get(key);
    if (existing && now - existing.lastObservedMs <= this.windowMs) {
      existing.count += 1;
      existing.lastObservedMs = now;
      if (!this.flushes.has(key)) {
        const timer = setTimeout(() => this.flush(key), this.flushMs);
        timer.unref();
        this.flushes.set(key, { timer, event });
      }
      return;
    }
    await this.create(key, event, now);
  }

  private flush(key: string): void {
    const scheduled = this.flushes.get(key);
    if (!scheduled) return;
    clearTimeout(scheduled.timer);
    this.flushes.delete(key);
    this.enqueue(key, scheduled.event, () => this.writeSeries(key, scheduled.event));
  }

  private async writeSeries(key: string, event: SecretEvent): Promise<void> {
    const series = this.series.get(key);
    if (!series || series.count === series.writtenCount) return;
    const { count, lastObservedMs } = series;
    try {
      await this.bounded(
        this.options.api.patch(event.namespace, series.eventName, {
          series: { count, lastObservedTime: microTime(lastObservedMs) },
        }),
      );
      series.writtenCount = Math.max(series.writtenCount, count);
    } catch (error) {
      // The Event expired (events have a TTL) or was deleted: start a new one.
      if (!isNotFound(error)) throw error;
      await this.create(key, event, lastObservedMs);
    }
  }

  private async create(key: string, event: SecretEvent, now: number): Promise<void> {
    const body = this.eventBody(event, now);
    await this.bounded(this.options.api.create(event.namespace, body));
    this.series.set(key, {
      eventName: (body.metadata as { name: string }).name,
      count: 1,
      lastObservedMs: now,
      writtenCount: 1,
    });
  }

  private eventBody(event: SecretEvent, now: number): JsonObject {
    const regarding: JsonObject = {
      apiVersion: 'v1',
      kind: 'Secret',
      namespace: event.namespace,
      name: event.secretName,
    };
    if (event.secretUid) regarding.uid = event.secretUid;
    return {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name: this.eventName(event.secretName, now), namespace: event.namespace },
      eventTime: microTime(now),
      reportingController: this.options.reportingController,
      reportingInstance: this.options.reportingInstance.slice(0, 128),
      action: event.action.slice(0, 128),
      reason: event.reason.slice(0, 128),
      type: 'Warning',
      note: truncateUtf8(event.note, EVENT_NOTE_LIMIT_BYTES),
      regarding,
    };
  }

  // Like client-go: `<object>.<hex nanoseconds>`, unique per replica thanks to the sequence.
  private eventName(secretName: string, now: number): string {
    const nanos = BigInt(now) * 1_000_000n + BigInt(this.sequence++ % 1_000_000);
    return `${secretName.slice(0, 253 - 20)}.${nanos.toString(16)}`;
  }

  private prune(): void {
    const horizon = this.now() - this.windowMs;
    for (const [key, entry] of this.series)
      if (entry.lastObservedMs < horizon && !this.flushes.has(key)) this.series.delete(key);
  }

  /** An API call cut at timeoutMs; the timer holds the process until then, as the call itself may hold nothing. */
  private bounded<T>(promise: Promise<T>): Promise<T> {
    const expiry = (): never => {
      throw new Error(`timed out after ${this.timeoutMs} ms`);
    };
    return raceDeadline(promise, this.timeoutMs, expiry, { keepAlive: true });
  }
}

/** RFC 3339 with microseconds, as the API server's MicroTime requires. */
export function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, '000Z');
}

export function truncateUtf8(text: string, limitBytes: number): string {
  if (Buffer.byteLength(text, 'utf8') <= limitBytes) return text;
  const ellipsis = '…';
  const cut = Buffer.from(text, 'utf8')
    .subarray(0, limitBytes - Buffer.byteLength(ellipsis, 'utf8'))
    .toString('utf8');
  // A cut inside a multi-byte character decodes to U+FFFD: drop it.
  return cut.replace(/\uFFFD$/, '') + ellipsis;
}

function isNotFound(error: unknown): boolean {
  const e = error as { code?: unknown; statusCode?: unknown } | null;
  return e !== null && typeof e === 'object' && (e.code === 404 || e.statusCode === 404);
}
