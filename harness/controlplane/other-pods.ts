// Pods that are not Dify's but look like it to a careless webhook: they set the env names Dify uses.
// The scenario files send them to show that dify-guard leaves them alone, or never even sees them.
import { ENV } from '../../src/contract.js';
import type { Json } from '../kube-rest.js';
import { randomSecret } from './chart.js';

/**
 * A pod of one container `app` (`image`) with MIGRATION_ENABLED "true" and a literal DB_PASSWORD in its env,
 * then `extraEnv`; `metadata` as given (generateName, namespace, labels...).
 */
export function podWithDifyEnvNames(metadata: Json, image: string, extraEnv: Json[] = []): Json {
  const env = [
    { name: ENV.migrationEnabled, value: 'true' },
    { name: ENV.dbPassword, value: randomSecret() },
    ...extraEnv,
  ];
  return { apiVersion: 'v1', kind: 'Pod', metadata, spec: { containers: [{ name: 'app', image, env }] } };
}
