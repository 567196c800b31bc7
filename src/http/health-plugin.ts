// GET /healthz (the process answers) and GET /readyz (it can judge requests), on the plain-HTTP port.
import type { FastifyInstance } from 'fastify';

export interface ReadinessChecks {
  /** A serving certificate is loaded. */
  certificate: boolean;
  /**
   * The PVC cache has completed its first full list. A later watch break keeps the replica ready on
   * purpose: password changes are then refused with "cannot verify, retry" while every other request
   * is still answered, instead of the Service losing its endpoints and the API server failing every
   * call to the Secret webhook (fail closed) and to the pod webhook.
   */
  pvcCache: boolean;
  /** SIGTERM received: the replica is leaving the Service endpoints. */
  shuttingDown: boolean;
}

export const isReady = (checks: ReadinessChecks): boolean =>
  checks.certificate && checks.pvcCache && !checks.shuttingDown;

export interface HealthPluginOptions {
  readiness: () => ReadinessChecks;
}

export async function healthPlugin(app: FastifyInstance, options: HealthPluginOptions): Promise<void> {
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const { certificate, pvcCache, shuttingDown } = options.readiness();
    const checks = { certificate, pvcCache, shuttingDown };
    const ready = isReady(checks);
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks });
  });
}
