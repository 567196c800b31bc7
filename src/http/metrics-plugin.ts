// GET /metrics in the Prometheus text format, from the server's own Registry.
import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../metrics.js';

export async function metricsPlugin(app: FastifyInstance, options: { metrics: Metrics }): Promise<void> {
  const { registry } = options.metrics;
  app.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()));
}
