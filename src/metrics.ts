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
  /** Secret decisions allowed but audited (a DELETE or a CREATE under a PVC), by reason code. */
  auditedAllowed: Counter<'reason'>;
  /** Pod template findings: kind of object, finding (literal_password, migration_enabled), mode (warn, deny). */
  templateFindings: Counter<'kind' | 'finding' | 'mode'>;
  /** Checks of a new PostgreSQL password against the database, by outcome (accepted, rejected, unreachable, rate-limited). */
  verifications: Counter<'outcome'>;
  /** Password changes under the PVC allowed because the database already accepted the new password (dry runs not counted). */
  verifiedRotations: Counter<never>;
  eventEmissionFailures: Counter<never>;
  certificateReloads: Counter<'result'>;
  pvcCacheRestarts: Counter<never>;
  /** Points the cache gauges at a cache (main wires the real one, tests a stub). */
  observeCache(status: CacheStatus): void;
}

/** Every dify-guard metric: name, type, labels and help, for the code, the README and the tests (one source). */
export const METRIC_SPECS = {
  requests: {
    name: 'dify_guard_admission_requests_total',
    type: 'counter',
    labels: ['route', 'decision', 'code'],
    help: 'AdmissionReview requests answered, by route, decision (allowed, patched, denied, rejected, error) and HTTP status code.',
  },
  requestDuration: {
    name: 'dify_guard_admission_request_duration_seconds',
    type: 'histogram',
    labels: ['route'],
    help: 'Time from receiving an AdmissionReview to answering it, in seconds, by route.',
  },
  denials: {
    name: 'dify_guard_secret_denials_total',
    type: 'counter',
    labels: ['reason'],
    help: 'Secret changes denied, by reason code.',
  },
  auditedAllowed: {
    name: 'dify_guard_secret_audited_allowed_total',
    type: 'counter',
    labels: ['reason'],
    help: 'Secret changes allowed but audited, by reason code (DeleteUnderPvc, CreateOverPvc, PvcStateUnknown, PasswordRotationVerified).',
  },
  verifications: {
    name: 'dify_guard_postgresql_verifications_total',
    type: 'counter',
    labels: ['outcome'],
    help:
      "New PostgreSQL passwords checked against the release's database (a password change under the PVC), " +
      'by outcome (accepted, rejected, unreachable, rate-limited: not asked).',
  },
  verifiedRotations: {
    name: 'dify_guard_verified_rotations_total',
    type: 'counter',
    labels: [],
    help:
      'PostgreSQL password changes allowed under the PVC because the database already accepted the new password ' +
      '(dry runs not counted).',
  },
  templateFindings: {
    name: 'dify_guard_template_findings_total',
    type: 'counter',
    labels: ['kind', 'finding', 'mode'],
    help:
      "Dify pod templates (and pods' last-applied annotations) found storing a literal password or MIGRATION_ENABLED on, " +
      'by kind, finding (literal_password, migration_enabled) and mode (warn, deny).',
  },
  pvcCacheSynced: {
    name: 'dify_guard_pvc_cache_synced',
    type: 'gauge',
    labels: [],
    help: '1 when the PVC cache is synced and its watch is healthy, else 0 (password changes are then refused).',
  },
  pvcCacheAge: {
    name: 'dify_guard_pvc_cache_age_seconds',
    type: 'gauge',
    labels: [],
    help: 'Seconds since the PVC cache last listed every PVC (since start if it never has).',
  },
  pvcCacheRestarts: {
    name: 'dify_guard_pvc_cache_restarts_total',
    type: 'counter',
    labels: [],
    help: 'Times the PVC list/watch was restarted after an error.',
  },
  eventEmissionFailures: {
    name: 'dify_guard_event_emission_failures_total',
    type: 'counter',
    labels: [],
    help: 'Warning Events on Secrets that could not be created or updated (errors, timeouts, overload).',
  },
  certificateReloads: {
    name: 'dify_guard_tls_certificate_reloads_total',
    type: 'counter',
    labels: ['result'],
    help: 'Serving certificate loads from disk, by result (loaded, failed); an unchanged pair is not counted.',
  },
} as const;

export const METRIC_NAMES = Object.fromEntries(Object.entries(METRIC_SPECS).map(([key, spec]) => [key, spec.name])) as {
  [K in keyof typeof METRIC_SPECS]: (typeof METRIC_SPECS)[K]['name'];
};

// Webhooks answer in milliseconds; the buckets resolve 0.5 ms to 10 s (the API server's default timeout).
export const LATENCY_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createMetrics(options: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  const startedAt = Date.now();
  // Until a cache is attached, the age counts from process start, so an alert on age still fires.
  let cache: CacheStatus = {
    synced: false,
    get ageSeconds() {
      return (Date.now() - startedAt) / 1000;
    },
  };
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });

  const metrics: Metrics = {
    registry,
    requests: new Counter({ ...specOf('requests'), registers: [registry] }),
    requestDuration: new Histogram({
      ...specOf('requestDuration'),
      buckets: LATENCY_BUCKETS_SECONDS,
      registers: [registry],
    }),
    denials: new Counter({ ...specOf('denials'), registers: [registry] }),
    auditedAllowed: new Counter({ ...specOf('auditedAllowed'), registers: [registry] }),
    templateFindings: new Counter({ ...specOf('templateFindings'), registers: [registry] }),
    verifications: new Counter({ ...specOf('verifications'), registers: [registry] }),
    verifiedRotations: new Counter({ ...specOf('verifiedRotations'), registers: [registry] }),
    eventEmissionFailures: new Counter({ ...specOf('eventEmissionFailures'), registers: [registry] }),
    certificateReloads: new Counter({ ...specOf('certificateReloads'), registers: [registry] }),
    pvcCacheRestarts: new Counter({ ...specOf('pvcCacheRestarts'), registers: [registry] }),
    observeCache(status) {
      cache = status;
    },
  };
  new Gauge({
    ...specOf('pvcCacheSynced'),
    registers: [registry],
    collect() {
      this.set(cache.synced ? 1 : 0);
    },
  });
  new Gauge({
    ...specOf('pvcCacheAge'),
    registers: [registry],
    collect() {
      this.set(cache.ageSeconds);
    },
  });
  return metrics;
}

function specOf<K extends keyof typeof METRIC_SPECS>(
  key: K,
): { name: string; help: string; labelNames: (typeof METRIC_SPECS)[K]['labels'] } {
  const spec = METRIC_SPECS[key];
  return { name: spec.name, help: spec.help, labelNames: spec.labels };
}
