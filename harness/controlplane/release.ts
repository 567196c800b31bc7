// One Dify release as the scenario files and the demo meet it: its names; the chart rendered for it, with
// values for a dify-guard outside the cluster (webhook.url) or inside it; its PostgreSQL Secret, its PVC and
// a password change of that Secret; the api pod its ReplicaSet would create; its Deployments rolled out.
import { ENV, LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { waitFor } from '../commands.js';
import { paths, type Json, type KubeRest } from '../kube-rest.js';
import { pvcManifest } from '../manifests.js';
import { findObject, podFromTemplate, randomSecret, renderChart, testValues, writeValues } from './chart.js';
import type { DifyGuard, DifyGuardOptions } from './dify-guard.js';
import { ensureNamespace, startGuardedControlPlane, type startStack, type Stack } from './stack.js';
import { registerWebhooks } from './webhooks.js';

/** A release's names, and its objects as the chart renders them. */
export class Release {
  /** The PostgreSQL Secret and its API path. */
  readonly secret: string;
  readonly secretPath: string;
  /** The PostgreSQL PVC (the StatefulSet's first claim). */
  readonly pvc: string;

  constructor(
    readonly release: string,
    readonly namespace: string,
  ) {
    this.secret = expandName(contract.names.postgresqlSecret, release);
    this.secretPath = paths.secret(namespace, this.secret);
    this.pvc = expandName(contract.names.postgresqlPvc, release);
  }

  /** `helm template` of the chart for this release, its values written to `<home>/<name>.values.json` first. */
  render(home: string, name: string, values: Json): Promise<Json[]> {
    const valuesFile = writeValues(home, name, values);
    return renderChart({ release: this.release, namespace: this.namespace, valuesFile, home });
  }

  /** The PostgreSQL Secret among the rendered objects. */
  postgresSecret(rendered: Json[]): Json {
    return findObject(rendered, 'Secret', this.secret);
  }

  /** The PostgreSQL PVC, labelled as the StatefulSet's claim is. */
  postgresPvc(): Json {
    return pvcManifest(this.pvc, {
      namespace: this.namespace,
      labels: { [LABELS.instance]: this.release, [LABELS.component]: contract.components.postgresql },
    });
  }

  /** The api pod as its ReplicaSet would create it from the rendered objects, asking for migrations in every container. */
  migratingApiPod(rendered: Json[]): Json {
    const name = expandName(contract.names.component, this.release, contract.components.api);
    const pod = podFromTemplate(findObject(rendered, 'Deployment', name), this.namespace);
    for (const c of (pod.spec as Json).containers as Json[]) {
      const others = ((c.env as Json[] | undefined) ?? []).filter((e) => e.name !== ENV.migrationEnabled);
      c.env = [...others, { name: ENV.migrationEnabled, value: 'true' }];
    }
    return pod;
  }
}

/**
 * `startStack` for one release: its namespace created, and the chart rendered once for it with values pointing
 * the webhook at the stack's dify-guard (written as `<name>.values.json` in the control plane's folder); the
 * webhook configurations registered are those of that rendering.
 */
export async function startReleaseStack(
  t: Parameters<typeof startStack>[0],
  name: string,
  release: Release,
  options: { guard?: DifyGuardOptions } = {},
): Promise<Stack & { rendered: Json[] }> {
  const { cp, guard } = await startGuardedControlPlane(t, name, options.guard);
  const rest = cp.rest();
  await ensureNamespace(rest, release.namespace);
  const rendered = await release.render(cp.dir, name, guardValues(guard));
  const webhooks = await registerWebhooks(cp, guard, { rendered });
  return { cp, guard, webhooks, rest, rendered };
}

/** Values every install needs (random credentials), with the webhook pointed at this dify-guard outside the cluster. */
export function guardValues(guard: DifyGuard, extra: Json = {}): Json {
  return testValues({ url: guard.url(''), caBundle: guard.caBundle }, extra);
}

/** Values for an install with dify-guard in the cluster (no webhook.url): the random credentials only. */
export function inClusterValues(): Json {
  return { secrets: { difySecretKey: randomSecret() }, postgresql: { auth: { password: randomSecret() } } };
}

/** A key of a Secret in plain text, from its stringData or else its data. */
export function secretText(secret: Json, key: string): string {
  const fromString = (secret.stringData as Record<string, string> | undefined)?.[key];
  const data = secret.data as Record<string, string> | undefined;
  return fromString ?? Buffer.from(String(data?.[key] ?? ''), 'base64').toString('utf8');
}

/** A merge patch that changes the PostgreSQL password (both keys, as the chart keeps them equal). */
export function passwordChange(password: string = randomSecret()): Json {
  return { stringData: { [SECRET_KEYS.postgresPassword]: password, [SECRET_KEYS.password]: password } };
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
