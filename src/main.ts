// dify-guard's entrypoint: wiring only. Config, logger, kube config, PVC cache, audit trail, server;
// on SIGTERM/SIGINT: readiness off, in-flight requests finish (bounded), watch stopped, exit 0.
import { hostname } from 'node:os';
import { KubeConfig } from '@kubernetes/client-node';
import { pino, type Logger } from 'pino';
import { createAuditTrail } from './audit/audit-trail.js';
import { SecretEventRecorder } from './audit/event-recorder.js';
import { eventsApiFor } from './audit/events-api.js';
import { PvcCache, pvcSourceFor } from './cluster/pvc-cache.js';
import { postgresVerifier } from './cluster/postgres-verifier.js';
import { loadConfig, type ConfigResult, type GuardConfig } from './config.js';
import { raceDeadline } from './deadline.js';
import { createMetrics, type Metrics } from './metrics.js';
import { buildServer, type DifyGuardServer } from './server.js';

/** events.k8s.io/v1 reportingController of the Warning Events. */
export const REPORTING_CONTROLLER = 'dify-guard.io/admission-webhook';

async function main(): Promise<void> {
  const { config, settings } = configOrExit();
  const log = pino({
    level: config.logLevel,
    base: { service: 'dify-guard' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
  // KUBECONFIG when set, else the pod's service account (token re-read as it rotates).
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromDefault();
  const metrics = createMetrics();
  const pvcCache = new PvcCache({
    source: pvcSourceFor(kubeConfig),
    log: log.child({ component: 'pvc-cache' }),
    resyncIntervalMs: config.pvcResyncSeconds * 1000,
    onRestart: () => metrics.pvcCacheRestarts.inc(),
  });
  metrics.observeCache(pvcCache);
  const events = config.eventsEnabled ? eventRecorderOf(kubeConfig, log, metrics) : undefined;
  const server = buildServer({
    settings,
    log,
    pvcCache,
    metrics,
    audit: createAuditTrail({ log, ...(events ? { events } : {}) }),
    bodyLimitBytes: config.bodyLimitBytes,
    passwordVerifier: postgresVerifier({
      addressTemplate: config.postgresqlAddressTemplate,
      timeoutMs: config.postgresqlVerifyTimeoutMs,
    }),
    verifyRateLimitPerMinute: config.postgresqlVerifyRateLimit,
    tls: { certFile: config.tlsCertFile, keyFile: config.tlsKeyFile },
  });
  const shutdown = shutdownOf({ config, log, server, pvcCache, events });
  // `on`, not `once`: with no listener left, a repeated signal would kill the process mid-drain.
  process.on('SIGTERM', (signal) => void shutdown(signal));
  process.on('SIGINT', (signal) => void shutdown(signal));
  pvcCache.start();
  const ports = await server.listen({ host: config.bindAddress, port: config.port, healthPort: config.healthPort });
  log.info(
    { ...ports, bindAddress: config.bindAddress, certificateLoaded: server.certificate?.loaded ?? false },
    'dify-guard listening',
  );
}

/** The loaded config; with bad settings, each problem on stderr and exit 2. */
function configOrExit(): Extract<ConfigResult, { ok: true }> {
  const loaded = loadConfig(process.env);
  if (loaded.ok) return loaded;
  for (const problem of loaded.problems) process.stderr.write(`dify-guard: ${problem}\n`);
  process.exit(2);
}

function eventRecorderOf(kubeConfig: KubeConfig, log: Logger, metrics: Metrics): SecretEventRecorder {
  return new SecretEventRecorder({
    api: eventsApiFor(kubeConfig),
    log: log.child({ component: 'events' }),
    reportingController: REPORTING_CONTROLLER,
    reportingInstance: hostname(),
    onFailure: () => metrics.eventEmissionFailures.inc(),
  });
}

interface RunningParts {
  config: GuardConfig;
  log: Logger;
  server: DifyGuardServer;
  pvcCache: PvcCache;
  events: SecretEventRecorder | undefined;
}

/**
 * The signal handler: readiness off, in-flight requests finish within the shutdown budget, the watch stops,
 * queued Events get what is left (a few seconds at most), exit 0. A second signal while it runs does nothing.
 */
function shutdownOf({
  config,
  log,
  server,
  pvcCache,
  events,
}: RunningParts): (signal: NodeJS.Signals) => Promise<void> {
  let stopping = false;
  return async (signal) => {
    if (stopping) return;
    stopping = true;
    const deadline = Date.now() + config.shutdownTimeoutSeconds * 1000;
    const remaining = (): number => Math.max(0, deadline - Date.now());
    log.info(
      { signal, delaySeconds: config.shutdownDelaySeconds },
      'shutting down: not ready any more, finishing in-flight requests',
    );
    server.beginShutdown();
    // Endpoints lag behind readiness: keep answering until the Service has stopped sending requests here.
    await delay(Math.min(config.shutdownDelaySeconds * 1000, remaining()));
    await server.close(Math.max(1000, remaining()));
    await pvcCache.stop();
    // Events already queued get what is left of the budget, and never more than a few seconds.
    if (events) await raceDeadline(events.idle(), Math.min(3000, remaining()), () => undefined);
    log.info('dify-guard stopped');
    process.exit(0);
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

main().catch((error: unknown) => {
  process.stderr.write(`dify-guard: failed to start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
