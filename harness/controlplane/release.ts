// One Dify release as the scenario files meet it: its names, the chart rendered for it, its PostgreSQL
// Secret and PVC, a password change of that Secret, and the api pod its ReplicaSet would create.
import { ENV, LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { waitFor } from '../commands.js';
import { paths, type Json, type KubeRest } from '../kube-rest.js';
import { pvcManifest } from '../manifests.js';
import { findObject, podFromTemplate, randomSecret, renderChart, testValues, writeValues } from './chart.js';
import type { DifyGuard } from './dify-guard.js';
import { ensureNamespace, startStack, type Stack } from './stack.js';

export interface ReleaseNames {
  release: string;
  namespace: string;
  /** The PostgreSQL Secret and its API path. */
  secret: string;
  secretPath: string;
  /** The PostgreSQL PVC (the StatefulSet's first claim). */
  pvc: string;
}

export function releaseNames(release: string, namespace: string): ReleaseNames {
  const secret = expandName(contract.names.postgresqlSecret, release);
  return {
    release,
    namespace,
    secret,
    secretPath: paths.secret(namespace, secret),
    pvc: expandName(contract.names.postgresqlPvc, release),
  };
}

/** `startStack` with the release's namespace created. */
export async function startReleaseStack(
  t: Parameters<typeof startStack>[0],
  name: string,
  namespace: string,
  options?: Parameters<typeof startStack>[2],
): Promise<Stack> {
  const stack = await startStack(t, name, options);
  await ensureNamespace(stack.rest, namespace);
  return stack;
}

/** Values every install needs (random credentials), with the webhook pointed at this dify-guard outside the cluster. */
export function guardValues(guard: DifyGuard, extra: Json = {}): Json {
  return testValues({ url: guard.url(''), caBundle: guard.caBundle }, extra);
}

/** Values for an install with dify-guard in the cluster (no webhook.url): the random credentials only. */
export function inClusterValues(): Json {
  return { secrets: { difySecretKey: randomSecret() }, postgresql: { auth: { password: randomSecret() } } };
}

/** `helm template` of the chart for the release, its values written to `<home>/<name>.values.json` first. */
export async function renderRelease(
  home: string,
  { release, namespace }: { release: string; namespace: string },
  name: string,
  values: Json,
): Promise<Json[]> {
  const valuesFile = writeValues(home, name, values);
  return renderChart({ release, namespace, valuesFile, home });
}

/** The release's PostgreSQL Secret among the rendered objects. */
export function postgresSecret(rendered: Json[], names: ReleaseNames): Json {
  return findObject(rendered, 'Secret', names.secret);
}

/** A key of a Secret in plain text, from its stringData or else its data. */
export function secretText(secret: Json, key: string): string {
  const fromString = (secret.stringData as Record<string, string> | undefined)?.[key];
  const data = secret.data as Record<string, string> | undefined;
  return fromString ?? Buffer.from(String(data?.[key] ?? ''), 'base64').toString('utf8');
}

/** The release's PostgreSQL PVC, labelled as the StatefulSet's claim is. */
export function postgresPvc(names: ReleaseNames): Json {
  return pvcManifest(names.pvc, {
    namespace: names.namespace,
    labels: { [LABELS.instance]: names.release, [LABELS.component]: contract.components.postgresql },
  });
}

/** A merge patch that changes the PostgreSQL password (both keys, as the chart keeps them equal). */
export function passwordChange(password: string = randomSecret()): Json {
  return { stringData: { [SECRET_KEYS.postgresPassword]: password, [SECRET_KEYS.password]: password } };
}

/** The release's api pod as its ReplicaSet would create it, asking for migrations in every container. */
export function migratingApiPod(rendered: Json[], release: string, namespace: string): Json {
  const api = findObject(
    rendered,
    'Deployment',
    expandName(contract.names.component, release, contract.components.api),
  );
  const pod = podFromTemplate(api, namespace);
  for (const c of (pod.spec as Json).containers as Json[]) {
    const others = ((c.env as Json[] | undefined) ?? []).filter((e) => e.name !== ENV.migrationEnabled);
    c.env = [...others, { name: ENV.migrationEnabled, value: 'true' }];
  }
  return pod;
}

/** Waits until every Deployment of the namespace has all its replicas ready, as `kubectl rollout status` would. */
export async function waitForRollouts(rest: KubeRest, namespace: string): Promise<void> {
  await waitFor(
    'every Deployment rolled out',
    async () => {
      const list = (await rest.ok('GET', `/apis/apps/v1/namespaces/${namespace}/deployments`)).items as Json[];
      return list.length > 0 && list.every((d) => (d.status as Json).readyReplicas === (d.spec as Json).replicas)
        ? true
        : undefined;
    },
    { timeoutMs: 180_000 },
  );
}
