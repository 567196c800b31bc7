// Prometheus metrics of the webhook, on their own Registry (never the global one, so tests and
// several servers in one process do not collide). Durations are in seconds, as Prometheus expects.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Where the PVC cache gauges read from at scrape time. */
export interface CacheStatus {
  readonly synced: boolean;
  /** Seconds since the cache last listed every PVC (or since it started, if it never has). */
  readonly ageSeconds: number;
}

export interface Metrics {
  registry: Registry;
  /** route: the webhook path; decision: allowed|patched|denied|rejected|error; code: HTTP status. */
  requests: Counter<'route' | 'decision' | 'code'>;
  requestDuration: Histogram<'route'>;
  denials: Counter<'reason'>;
  eventEmissionFailures: Counter<never>;
  certificateReloads: Counter<'result'>;
  pvcCacheRestarts: Counter<never>;
  /** Points the cache gauges at a cache (main wires the real one, tests a stub). */
  observeCache(status: CacheStatus): void;
}

/** The metric names, for the README and the tests (one source). */
export const METRIC_NAMES = {
  requests: 'dify_guard_admission_requests_total',
  requestDuration: 'dify_guard_admission_request_duration_seconds',
  denials: 'dify_guard_secret_denials_total',
  pvcCacheSynced: 'dify_guard_pvc_cache_synced',
  pvcCacheAge: 'dify_guard_pvc_cache_age_seconds',
  pvcCacheRestarts: 'dify_guard_pvc_cache_restarts_total',
  eventEmissionFailures: 'dify_guard_event_emission_failures_total',
  certificateReloads: 'dify_guard_tls_certificate_reloads_total',
} as const;

export const METRIC_HELP: Record<keyof typeof METRIC_NAMES, string> = {
  requests: 'AdmissionReview requests answered, by route, decision (allowed, patched, denied, rejected, error) and HTTP status code.',
  requestDuration: 'Time from receiving an AdmissionReview to answering it, in seconds, by route.',
  denials: 'Secret changes denied, by reason code.',
  pvcCacheSynced: '1 when the PVC cache is synced and its watch is healthy, else 0 (password changes are then refused).',
  pvcCacheAge: 'Seconds since the PVC cache last listed every PVC (since start if it never has).',
  pvcCacheRestarts: 'Times the PVC list/watch was restarted after an error.',
  eventEmissionFailures: 'Warning Events on Secrets that could not be created or updated.',
  certificateReloads: 'Attempts to load the serving certificate from disk, by result (loaded, unchanged, failed).',
};

// Webhooks answer in milliseconds; the buckets resolve 0.5 ms to 10 s (the API server's default timeout).
export const LATENCY_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createMetrics(options: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  const startedAt = Date.now();
  // Until a cache is attached, the age counts from process start, so an alert on age still fires.
  let cache: CacheStatus = { synced: false, get ageSeconds() { return (Date.now() - startedAt) / 1000; } };
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });

  const metrics: Metrics = {
    registry,
    requests: new Counter({ name: METRIC_NAMES.requests, help: METRIC_HELP.requests, labelNames: ['route', 'decision', 'code'], registers: [registry] }),
    requestDuration: new Histogram({
      name: METRIC_NAMES.requestDuration, help: METRIC_HELP.requestDuration, labelNames: ['route'],
      buckets: LATENCY_BUCKETS_SECONDS, registers: [registry],
    }),
    denials: new Counter({ name: METRIC_NAMES.denials, help: METRIC_HELP.denials, labelNames: ['reason'], registers: [registry] }),
    eventEmissionFailures: new Counter({ name: METRIC_NAMES.eventEmissionFailures, help: METRIC_HELP.eventEmissionFailures, registers: [registry] }),
    certificateReloads: new Counter({ name: METRIC_NAMES.certificateReloads, help: METRIC_HELP.certificateReloads, labelNames: ['result'], registers: [registry] }),
    pvcCacheRestarts: new Counter({ name: METRIC_NAMES.pvcCacheRestarts, help: METRIC_HELP.pvcCacheRestarts, registers: [registry] }),
    observeCache(status) { cache = status; },
  };
  new Gauge({
    name: METRIC_NAMES.pvcCacheSynced, help: METRIC_HELP.pvcCacheSynced, registers: [registry],
    collect() { this.set(cache.synced ? 1 : 0); },
  });
  new Gauge({
    name: METRIC_NAMES.pvcCacheAge, help: METRIC_HELP.pvcCacheAge, registers: [registry],
    collect() { this.set(cache.ageSeconds); },
  });
  return metrics;
}
