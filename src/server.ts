// buildServer: the two fastify apps of dify-guard, from injected parts (settings, PVC cache, audit
// sink, metrics, certificate files). `admission` serves the webhooks over HTTPS; `health` serves
// /healthz, /readyz and /metrics over plain HTTP. Tests call them with `inject` or on real ports.
import type { Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyServerFactory,
} from 'fastify';
import type { Logger } from 'pino';
import type { GuardSettings } from './admission/settings.js';
import type { PvcState } from './admission/types.js';
import type { AuditSink } from './audit/audit-trail.js';
import { contract } from './contract.js';
import { raceDeadline } from './deadline.js';
import { admissionPlugin, type AdmissionRoute } from './http/admission-plugin.js';
import { healthPlugin, isReady, type ReadinessChecks } from './http/health-plugin.js';
import { metricsPlugin } from './http/metrics-plugin.js';
import { podMutationHandler } from './http/pod-route.js';
import { workloadTemplateHandler } from './http/workload-route.js';
import { secretGuardHandler, type SecretGuardDeps } from './http/secret-route.js';
import { CertificateReloader } from './http/tls-reloader.js';
import { RateLimiter } from './http/rate-limit.js';
import { postgresVerifier, type PasswordVerifier } from './cluster/postgres-verifier.js';
import { SETTINGS } from './config.js';
import { createMetrics, type Metrics } from './metrics.js';

/** What the server reads from the PVC cache: answers from memory, never an API call. */
export interface PvcStateSource {
  state(namespace: string, name: string): PvcState;
  readonly synced: boolean;
  /** True once the first full list has completed (readiness); `synced` is the watch's health now. */
  readonly hasSynced: boolean;
}

export interface ServerOptions {
  settings: GuardSettings;
  log: Logger;
  pvcCache: PvcStateSource;
  audit: AuditSink;
  /** A fresh set on its own Registry when absent. */
  metrics?: Metrics;
  /** Asks the release's PostgreSQL about a new password; by default at the default address and timeout. */
  passwordVerifier?: PasswordVerifier;
  /** Database checks per Secret per minute (default: the setting's default). */
  verifyRateLimitPerMinute?: number;
  bodyLimitBytes?: number;
  /**
   * The serving certificate files. Without them the admission app speaks plain HTTP and never
   * reports ready: that is only for `inject` tests.
   */
  tls?: { certFile: string; keyFile: string; pollIntervalMs?: number; debounceMs?: number };
}

export interface ListenOptions {
  host: string;
  port: number;
  healthPort: number;
  /** Defaults to `host`. */
  healthHost?: string;
}

export interface DifyGuardServer {
  admission: FastifyInstance;
  health: FastifyInstance;
  metrics: Metrics;
  certificate: CertificateReloader | undefined;
  readiness(): ReadinessChecks & { ready: boolean };
  /** Loads the certificate (a failure leaves the server unready, still watching) and opens both ports. */
  listen(options: ListenOptions): Promise<{ port: number; healthPort: number }>;
  /** Readiness goes false at once; requests are still judged, each answer closing its connection. */
  beginShutdown(): void;
  /**
   * Stops accepting, lets in-flight requests finish within `timeoutMs` (then cuts what is left),
   * closes the health port last.
   */
  close(timeoutMs?: number): Promise<void>;
}

export const DEFAULT_BODY_LIMIT_BYTES = 3 * 1024 * 1024;

export function buildServer(options: ServerOptions): DifyGuardServer {
  const metrics = options.metrics ?? createMetrics();
  const state = { shuttingDown: false };
  const certificate = certificateReloaderOf(options, metrics);
  const admission = admissionApp(options, metrics, certificate, state);
  const readiness = (): ReadinessChecks & { ready: boolean } => {
    const checks = {
      certificate: certificate?.loaded ?? false,
      pvcCache: options.pvcCache.hasSynced,
      shuttingDown: state.shuttingDown,
    };
    return { ...checks, ready: isReady(checks) };
  };
  const health = healthApp(options.log, readiness, metrics);
  return {
    admission,
    health,
    metrics,
    certificate,
    readiness,
    async listen(listenOptions) {
      await certificate?.start();
      return listenBoth(admission, health, listenOptions, certificate !== undefined);
    },
    beginShutdown() {
      state.shuttingDown = true;
    },
    async close(timeoutMs = 25_000) {
      state.shuttingDown = true;
      certificate?.stop();
      await closeBoth(admission, health, timeoutMs, options.log);
    },
  };
}

function certificateReloaderOf(options: ServerOptions, metrics: Metrics): CertificateReloader | undefined {
  if (!options.tls) return undefined;
  return new CertificateReloader({
    ...options.tls,
    log: options.log.child({ component: 'tls' }),
    onResult: (result) => metrics.certificateReloads.inc({ result }),
  });
}

/** The admission app: HTTPS when there is a certificate, the admission plugin with the three webhook routes. */
function admissionApp(
  options: ServerOptions,
  metrics: Metrics,
  certificate: CertificateReloader | undefined,
  state: { shuttingDown: boolean },
): FastifyInstance {
  const bodyLimitBytes = options.bodyLimitBytes ?? DEFAULT_BODY_LIMIT_BYTES;
  const admission = Fastify({
    loggerInstance: options.log.child({ component: 'admission' }) as FastifyBaseLogger,
    // The admission plugin writes its own line per request (names only); fastify's would add nothing.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: bodyLimitBytes,
    // Like controller-runtime: idle keep-alive 90 s (the API server reuses connections), headers within 32 s.
    keepAliveTimeout: 90_000,
    requestTimeout: 30_000,
    // A request that still arrives while closing is judged, not answered 503 (a webhook failure).
    return503OnClosing: false,
    ...(certificate ? { serverFactory: httpsServerFactory(certificate) } : {}),
  }) as unknown as FastifyInstance;
  // Once shutting down, every answer closes its connection, so the API server reconnects to a ready replica.
  admission.addHook('onSend', async (_request, reply) => {
    if (state.shuttingDown) void reply.header('connection', 'close');
  });
  void admission.register(admissionPlugin, { bodyLimitBytes, metrics, routes: admissionRoutes(options, metrics) });
  return admission;
}

function admissionRoutes(options: ServerOptions, metrics: Metrics): AdmissionRoute[] {
  const { settings, log } = options;
  return [
    {
      path: contract.webhook.mutatePodsPath,
      handler: podMutationHandler({ settings, metrics, log: log.child({ component: 'pods' }) }),
    },
    {
      path: contract.webhook.validateWorkloadsPath,
      handler: workloadTemplateHandler({ settings, metrics, log: log.child({ component: 'audit' }) }),
    },
    { path: contract.webhook.validateSecretsPath, handler: secretGuardHandler(secretGuardDepsOf(options, metrics)) },
  ];
}

function secretGuardDepsOf(options: ServerOptions, metrics: Metrics): SecretGuardDeps {
  return {
    settings: options.settings,
    pvcStateOf: (namespace, name) => options.pvcCache.state(namespace, name),
    audit: options.audit,
    metrics,
    log: options.log.child({ component: 'audit' }),
    verifier:
      options.passwordVerifier ??
      postgresVerifier({
        addressTemplate: SETTINGS.postgresqlAddressTemplate.default,
        timeoutMs: SETTINGS.postgresqlVerifyTimeoutMs.default,
      }),
    rateLimiter: new RateLimiter({
      perMinute: options.verifyRateLimitPerMinute ?? SETTINGS.postgresqlVerifyRateLimit.default,
    }),
  };
}

/** The plain-HTTP app of /healthz, /readyz and /metrics. */
function healthApp(
  log: Logger,
  readiness: () => ReadinessChecks & { ready: boolean },
  metrics: Metrics,
): FastifyInstance {
  const health = Fastify({
    loggerInstance: log.child({ component: 'health' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
  }) as unknown as FastifyInstance;
  void health.register(healthPlugin, { readiness });
  void health.register(metricsPlugin, { metrics });
  return health;
}

async function listenBoth(
  admission: FastifyInstance,
  health: FastifyInstance,
  options: ListenOptions,
  https: boolean,
): Promise<{ port: number; healthPort: number }> {
  await admission.listen({
    host: options.host,
    port: options.port,
    listenTextResolver: (address) =>
      `admission webhooks listening at ${https ? address.replace(/^http:/, 'https:') : address}`,
  });
  await health.listen({
    host: options.healthHost ?? options.host,
    port: options.healthPort,
    listenTextResolver: (address) => `health and metrics listening at ${address}`,
  });
  return { port: portOf(admission), healthPort: portOf(health) };
}

/** In-flight admission requests get `timeoutMs`, then what is left is cut; the health port closes last. */
async function closeBoth(
  admission: FastifyInstance,
  health: FastifyInstance,
  timeoutMs: number,
  log: Logger,
): Promise<void> {
  const closed = admission.close().then(() => 'closed' as const);
  if ((await raceDeadline(closed, timeoutMs, () => 'timeout' as const)) === 'timeout') {
    log.warn({ timeoutMs }, 'shutdown timeout: closing the connections still open');
    admission.server.closeAllConnections();
    await closed;
  }
  await health.close();
}

/** The HTTPS server of the admission app, its secure context kept in step with the certificate files. */
function httpsServerFactory(certificate: CertificateReloader): FastifyServerFactory {
  return (handler) => {
    const server = createHttpsServer({ ...certificate.serverOptions() }, handler);
    server.keepAliveTimeout = 90_000;
    server.headersTimeout = 32_000;
    server.requestTimeout = 30_000;
    certificate.attach(server);
    // fastify's types expect an http.Server; an https.Server offers the same surface it uses.
    return server as unknown as HttpServer;
  };
}

function portOf(app: FastifyInstance): number {
  const address = app.server.address();
  return typeof address === 'object' && address !== null ? address.port : 0;
}
