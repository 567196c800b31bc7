// Which PVCs exist, from a cluster-wide list + watch (@kubernetes/client-node's ListWatch), so the
// Secret guard never calls the API server per request. Fails closed: `state` answers 'unknown'
// before the first list and from any list/watch error until the next successful list.
//
// Each (re)start is a fresh ListWatch "generation" that lists before it watches. A periodic resync
// starts a new generation while the old one keeps answering, then swaps; it catches a watch that
// went quiet without an error (pepr#745, kubernetes-client/javascript#596), on top of the
// client's own inactivity timeout. A 410 Gone makes ListWatch relist by itself.
import {
  CoreV1Api,
  ListWatch,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type V1PersistentVolumeClaim,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { PvcState } from '../admission/types.js';
import { describeApiError } from '../api-errors.js';
import { raceDeadline } from '../deadline.js';

export const PVC_WATCH_PATH = '/api/v1/persistentvolumeclaims';

type PvcList = KubernetesListObject<V1PersistentVolumeClaim>;

/** The list and watch calls; the real ones come from `pvcSourceFor`, tests may inject faults. */
export interface PvcListWatchSource {
  list(): Promise<PvcList>;
  watch: Pick<Watch, 'watch'>;
}

export function pvcSourceFor(kubeConfig: KubeConfig): PvcListWatchSource {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  return { list: () => core.listPersistentVolumeClaimForAllNamespaces(), watch: new Watch(kubeConfig) };
}

export interface PvcCacheOptions {
  source: PvcListWatchSource;
  log: Logger;
  /** Restart delay after an error: doubles from initialMs up to maxMs, each one jittered (50-100%). */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Full relist period. */
  resyncIntervalMs?: number;
  /** A list that has not answered by then counts as failed. */
  listTimeoutMs?: number;
  onRestart?: () => void;
  random?: () => number;
  now?: () => number;
}

export class PvcCache {
  private readonly live = new Map<number, ListWatch<V1PersistentVolumeClaim>>();
  private serving: ListWatch<V1PersistentVolumeClaim> | undefined;
  private healthy = false;
  private everSynced = false;
  private generation = 0;
  private failures = 0;
  private lastSyncMs: number | undefined;
  private startedMs: number;
  private retryTimer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private stopped = true;
  private waiters: Array<() => void> = [];
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(private readonly options: PvcCacheOptions) {
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.startedMs = this.now();
  }

  /** What the cache knows about one PVC; only memory is read. */
  state(namespace: string, name: string): PvcState {
    if (!this.healthy || !this.serving) return 'unknown';
    return this.serving.get(name, namespace) ? 'present' : 'absent';
  }

  /** True after a successful list, until the next list or watch error. */
  get synced(): boolean {
    return this.healthy;
  }

  /** True once the first full list has completed; a later watch break does not reset it. */
  get hasSynced(): boolean {
    return this.everSynced;
  }

  get lastSyncTime(): Date | undefined {
    return this.lastSyncMs === undefined ? undefined : new Date(this.lastSyncMs);
  }

  /** Seconds since the last successful list (since start when there was none), for the age metric. */
  get ageSeconds(): number {
    return (this.now() - (this.lastSyncMs ?? this.startedMs)) / 1000;
  }

  /** Resolves at the next moment the cache is synced (at once if it is). */
  whenSynced(): Promise<void> {
    if (this.healthy) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.startedMs = this.now();
    this.startGeneration();
    const interval = this.options.resyncIntervalMs ?? 5 * 60_000;
    this.resyncTimer = setInterval(() => this.resync(), interval);
    this.resyncTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.healthy = false;
    clearTimeout(this.retryTimer);
    clearInterval(this.resyncTimer);
    const informers = [...this.live.values()];
    this.live.clear();
    this.serving = undefined;
    await Promise.all(informers.map((informer) => informer.stop()));
  }

  private startGeneration(): void {
    const id = ++this.generation;
    const list = async (): Promise<PvcList> => {
      const result = await raceDeadline(this.options.source.list(), this.options.listTimeoutMs ?? 60_000, (): never => {
        throw new Error(`PVC list timed out after ${this.options.listTimeoutMs ?? 60_000} ms`);
      });
      // A retired generation must not go on to open a watch.
      if (!this.live.has(id)) throw new RetiredGeneration();
      // ListWatch stores the list right after this promise settles; count it as synced after that.
      setImmediate(() => this.listed(id, result.items.length));
      return result;
    };
    const informer = new ListWatch<V1PersistentVolumeClaim>(
      PVC_WATCH_PATH,
      this.options.source.watch as Watch,
      list,
      false,
    );
    this.live.set(id, informer);
    informer.on('error', (error) => this.failed(id, error));
    informer.start().catch((error: unknown) => this.failed(id, error));
  }

  private listed(id: number, count: number): void {
    const informer = this.live.get(id);
    // Only the newest generation may answer; an older one relisting after a 410 is on its way out.
    if (this.stopped || !informer || id !== this.generation) return;
    const wasHealthy = this.healthy;
    this.serving = informer;
    this.healthy = true;
    this.everSynced = true;
    this.failures = 0;
    this.lastSyncMs = this.now();
    for (const [otherId, other] of this.live) {
      if (otherId !== id) this.retire(otherId, other);
    }
    if (!wasHealthy) this.options.log.info({ pvcs: count }, 'PVC cache synced');
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }

  private failed(id: number, error: unknown): void {
    const informer = this.live.get(id);
    if (this.stopped || !informer || error instanceof RetiredGeneration) return;
    if (id !== this.generation) {
      // An older generation broke while a newer one is listing: stop answering from it.
      this.retire(id, informer);
      if (this.serving === informer) this.healthy = false;
      return;
    }
    for (const [otherId, other] of this.live) this.retire(otherId, other);
    this.healthy = false;
    const delayMs = this.backoffDelay();
    this.failures += 1;
    this.options.log.warn(
      { error: describeApiError(error), retryInMs: Math.round(delayMs), failures: this.failures },
      'PVC list/watch failed: password changes are refused until it lists again',
    );
    this.options.onRestart?.();
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.stopped) this.startGeneration();
    }, delayMs);
  }

  private backoffDelay(): number {
    const initial = this.options.backoff?.initialMs ?? 1_000;
    const max = this.options.backoff?.maxMs ?? 60_000;
    const base = Math.min(max, initial * 2 ** Math.min(this.failures, 30));
    return base * (0.5 + this.random() * 0.5);
  }

  private resync(): void {
    // Skipped while a restart is pending or a newer generation is still listing.
    if (this.stopped || this.retryTimer || !this.healthy) return;
    if (this.serving !== this.live.get(this.generation)) return;
    this.startGeneration();
  }

  private retire(id: number, informer: ListWatch<V1PersistentVolumeClaim>): void {
    this.live.delete(id);
    void informer.stop();
  }
}

class RetiredGeneration extends Error {
  constructor() {
    super('PVC list of a retired cache generation');
  }
}
