// dify-guard as the chart installs it: the webhook configurations select Dify pods by what they run
// (CEL matchConditions built from the contract's lists; the API server evaluates them in
// test/controlplane), Dify pod templates, and the PostgreSQL Secret (selectors evaluated here against
// every rendered Secret), never kube-system nor dify-guard itself; TLS in its three modes; Deployment, PDB, RBAC.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { LABELS, contract } from '../../src/contract.js';
import { chartComponentOf, difyImagePatternSource, runsDify } from '../../src/admission/dify-containers.js';
import { defaultGuardSettings } from '../../src/admission/settings.js';
import type { JsonObject } from '../../src/admission/types.js';
import { repoRoot } from '../../harness/binaries.js';
import {
  annotationsOf,
  find,
  kindOf,
  labelsOf,
  nameOf,
  ofKind,
  podTemplateOf,
  selects,
  template,
  testSecret,
  workloads,
  type Json,
  type LabelSelector,
} from '../../harness/helm.js';
import { mainContainerOf, namespace, podLabelsOf, releaseName, renderChart, withRequired } from './support.js';

const packageVersion = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string })
  .version;

interface Webhook {
  name: string;
  clientConfig: {
    url?: string;
    caBundle?: string;
    service?: { name: string; namespace: string; path: string; port: number };
  };
  rules: { operations: string[]; apiGroups: string[]; apiVersions: string[]; resources: string[]; scope: string }[];
  objectSelector: LabelSelector;
  namespaceSelector: LabelSelector;
  failurePolicy: string;
  sideEffects: string;
  matchPolicy: string;
  reinvocationPolicy?: string;
  timeoutSeconds: number;
  admissionReviewVersions: string[];
  matchConditions?: { name: string; expression: string }[];
}

function configurations(objects: Json[]): {
  mutating: Json;
  validating: Json;
  pods: Webhook;
  secrets: Webhook;
  workloads: Webhook;
} {
  const [mutating, ...m] = ofKind(objects, 'MutatingWebhookConfiguration');
  const [validating, ...v] = ofKind(objects, 'ValidatingWebhookConfiguration');
  if (!mutating || !validating || m.length || v.length)
    throw new Error('expected one Mutating and one ValidatingWebhookConfiguration');
  const named = (c: Json, count: number, name: string): Webhook => {
    const hooks = c.webhooks as Webhook[];
    if (hooks.length !== count) throw new Error(`${nameOf(c)} has ${hooks.length} webhooks`);
    const hook = hooks.find((h) => h.name === name);
    if (!hook) throw new Error(`${nameOf(c)} has no webhook ${name}`);
    return hook;
  };
  return {
    mutating,
    validating,
    pods: named(mutating, 1, contract.webhook.podWebhookName),
    secrets: named(validating, 2, contract.webhook.secretWebhookName),
    workloads: named(validating, 2, contract.webhook.workloadWebhookName),
  };
}

/** The CEL the chart should render for a pod (or template) at `path`, from the contract's lists. */
function expectedDifyCel(path: string, images: readonly string[]): string {
  const q = (value: unknown): string => JSON.stringify(value);
  const labels = `${path}.metadata.labels`;
  const chart =
    `(has(${labels}) && ${q(LABELS.name)} in ${labels} && ${labels}[${q(LABELS.name)}] == ${q(contract.values.difyName)}` +
    ` && ${q(LABELS.component)} in ${labels} && ${labels}[${q(LABELS.component)}] in ${q(contract.podRules.injectCredentials)})`;
  const container =
    `(has(c.image) && c.image.matches(${q(difyImagePatternSource(images))})) || ` +
    `(has(c.env) && c.env.exists(e, e.name in ${q(contract.difyOnlySettings)}))`;
  return (
    `${chart} || ${path}.spec.containers.exists(c, ${container}) || ` +
    `(has(${path}.spec.initContainers) && ${path}.spec.initContainers.exists(c, ${container}))`
  );
}
const TEMPLATE_PATH = "(request.kind.kind == 'CronJob' ? object.spec.jobTemplate.spec.template : object.spec.template)";

const nsLabels = (name: string): Record<string, string> => ({ 'kubernetes.io/metadata.name': name });
const isGuard = (labels: Record<string, string>): boolean => labels[LABELS.name] === contract.values.guardName;

// Everything the chart can render at once: Redis auth (its Secret), pgvector, the MetalLB proxy.
const full = await renderChart({
  pluginDaemon: { redis: { authEnabled: true, password: testSecret() } },
  loadBalancer: { enabled: true },
});
const hooks = configurations(full.objects);
/** The dify-guard Deployment: the one named by the Service the pod webhook calls. */
const guardDeploymentOf = (objects: Json[], configured = hooks): Json =>
  find(objects, 'Deployment', configured.pods.clientConfig.service!.name);

/** The pod webhook's decision on a pod: its objectSelector, then this chart's component label or what the pod runs. */
function podWebhookSelects(pod: JsonObject, labels: Record<string, string>): boolean {
  if (!selects(hooks.pods.objectSelector, labels)) return false;
  return chartComponentOf(pod) !== undefined
    ? (contract.podRules.injectCredentials as string[]).includes(labels[LABELS.component] ?? '')
    : runsDify(pod, defaultGuardSettings);
}

t.test("the pod webhook selects Dify pods by what they run (CEL), never dify-guard's own", async (t) => {
  t.same(
    hooks.pods.matchConditions,
    [{ name: 'dify-pods', expression: expectedDifyCel('object', contract.difyImages) }],
    "CEL from the contract: this chart's labels, a Dify image (the regex src/admission/dify-containers.ts uses) or a Dify-only setting",
  );
  t.same(hooks.pods.objectSelector, {
    matchExpressions: [{ key: LABELS.name, operator: 'NotIn', values: [contract.values.guardName] }],
  });
  const selected: string[] = [];
  for (const w of workloads(full.objects)) {
    const labels = podLabelsOf(w);
    if (podWebhookSelects(podTemplateOf(w) as unknown as JsonObject, labels))
      selected.push(labels[LABELS.component] ?? '');
  }
  t.same(
    selected.sort(),
    [...contract.podRules.injectCredentials].sort(),
    'of the rendered pods, the same decision selects exactly api/worker/beat/plugin-daemon/migration',
  );
  t.notOk(selects(hooks.pods.objectSelector, { [LABELS.name]: contract.values.guardName }), "dify-guard's own pods");
  const mirrored = configurations((await renderChart({ webhook: { difyImages: ['corp/dify.backend'] } })).objects);
  t.same(
    mirrored.pods.matchConditions?.[0]?.expression,
    expectedDifyCel('object', [...contract.difyImages, 'corp/dify.backend']),
    "webhook.difyImages adds to the contract's images (dots quoted)",
  );
  const env = mainContainerOf(guardDeploymentOf(full.objects)).env ?? [];
  t.same(
    env.find((e) => e.name === 'DIFY_GUARD_DIFY_IMAGES')?.value,
    contract.difyImages.join(','),
    'dify-guard gets the same list',
  );
});

t.test('the workload webhook: Dify pod templates, CREATE and UPDATE, controller-owned objects left out', async (t) => {
  const w = hooks.workloads;
  t.same(w.rules, [
    {
      operations: ['CREATE', 'UPDATE'],
      apiGroups: ['apps'],
      apiVersions: ['v1'],
      resources: ['deployments', 'statefulsets', 'daemonsets', 'replicasets'],
      scope: 'Namespaced',
    },
    {
      operations: ['CREATE', 'UPDATE'],
      apiGroups: ['batch'],
      apiVersions: ['v1'],
      resources: ['jobs', 'cronjobs'],
      scope: 'Namespaced',
    },
  ]);
  t.same(w.matchConditions, [
    {
      name: 'not-controller-owned',
      expression:
        '!has(object.metadata.ownerReferences) || !object.metadata.ownerReferences.exists(r, has(r.controller) && r.controller)',
    },
    { name: 'dify-pod-template', expression: expectedDifyCel(TEMPLATE_PATH, contract.difyImages) },
  ]);
  t.equal(w.sideEffects, 'None', 'no Event: a log line and auditAnnotations');
  t.equal(w.failurePolicy, 'Ignore', 'warn mode: advice only, an outage blocks nothing');
  const env = mainContainerOf(guardDeploymentOf(full.objects)).env ?? [];
  t.same(env.find((e) => e.name === 'DIFY_GUARD_TEMPLATE_POLICY')?.value, 'warn');
  const denying = await renderChart({ webhook: { templatePolicy: 'deny' } });
  t.equal(configurations(denying.objects).workloads.failurePolicy, 'Fail', 'deny mode: the policy holds');
  const denyEnv = mainContainerOf(guardDeploymentOf(denying.objects)).env ?? [];
  t.same(denyEnv.find((e) => e.name === 'DIFY_GUARD_TEMPLATE_POLICY')?.value, 'deny');
  const typo = await template(withRequired({ webhook: { templatePolicy: 'block' } }));
  t.not(typo.status, 0, 'the schema refuses another policy');
});

t.test('the Secret webhook selects exactly the PostgreSQL Secret', async (t) => {
  const secrets = ofKind(full.objects, 'Secret');
  t.ok(secrets.length >= 4, 'postgresql, app, redis, dify-guard TLS');
  for (const s of secrets) {
    t.equal(
      selects(hooks.secrets.objectSelector, labelsOf(s)),
      nameOf(s) === releaseName('postgresqlSecret'),
      nameOf(s),
    );
  }
});

t.test('never kube-system; the release namespace yes; extra exclusions add to kube-system', async (t) => {
  for (const hook of [hooks.pods, hooks.secrets, hooks.workloads]) {
    t.notOk(selects(hook.namespaceSelector, nsLabels('kube-system')), `${hook.name}: kube-system`);
    t.ok(selects(hook.namespaceSelector, nsLabels(namespace)), `${hook.name}: ${namespace}`);
  }
  const { objects } = await renderChart({ webhook: { excludedNamespaces: ['sandbox-ns'] } });
  const excluded = configurations(objects);
  for (const hook of [excluded.pods, excluded.secrets, excluded.workloads]) {
    t.notOk(selects(hook.namespaceSelector, nsLabels('kube-system')), `${hook.name}: still kube-system`);
    t.notOk(selects(hook.namespaceSelector, nsLabels('sandbox-ns')), `${hook.name}: sandbox-ns`);
  }
});

t.test('webhook settings: names, rules, sideEffects, policies, timeouts', async (t) => {
  const { pods, secrets } = hooks;
  t.equal(pods.name, contract.webhook.podWebhookName);
  t.equal(secrets.name, contract.webhook.secretWebhookName);
  t.same(pods.rules, [
    { operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' },
  ]);
  t.same(secrets.rules, [
    {
      operations: ['CREATE', 'UPDATE', 'DELETE'],
      apiGroups: [''],
      apiVersions: ['v1'],
      resources: ['secrets'],
      scope: 'Namespaced',
    },
  ]);
  t.equal(pods.sideEffects, 'None');
  t.equal(secrets.sideEffects, 'NoneOnDryRun', 'it writes Events, never on dry run');
  for (const hook of [pods, secrets]) {
    t.equal(hook.matchPolicy, 'Equivalent');
    t.same(hook.admissionReviewVersions, ['v1']);
    t.equal(hook.timeoutSeconds, 5);
    t.equal(hook.failurePolicy, 'Fail');
  }
  t.equal(pods.reinvocationPolicy, 'IfNeeded');
  const tuned = configurations(
    (await renderChart({ webhook: { timeoutSeconds: 12, pods: { failurePolicy: 'Ignore' } } })).objects,
  );
  t.equal(tuned.pods.failurePolicy, 'Ignore');
  t.equal(tuned.secrets.failurePolicy, 'Fail', 'the Secret guard always fails closed');
  t.equal(tuned.pods.timeoutSeconds, 12);
  t.equal(tuned.secrets.timeoutSeconds, 12);
});

t.test(
  "in-cluster: clientConfig calls dify-guard's Service on 443, which reaches the HTTPS container port",
  async (t) => {
    for (const [hook, path] of [
      [hooks.pods, contract.webhook.mutatePodsPath],
      [hooks.secrets, contract.webhook.validateSecretsPath],
      [hooks.workloads, contract.webhook.validateWorkloadsPath],
    ] as const) {
      const svcRef = hook.clientConfig.service!;
      t.equal(svcRef.namespace, namespace);
      t.equal(svcRef.path, path);
      t.equal(svcRef.port, 443);
      t.notOk(hook.clientConfig.url);
      const svc = find(full.objects, 'Service', svcRef.name);
      const port = ((svc.spec as Json).ports as Json[]).find((p) => p.port === 443)!;
      const deploy = find(full.objects, 'Deployment', svcRef.name);
      t.same(
        (svc.spec as Json).selector,
        ((deploy.spec as Json).selector as Json).matchLabels,
        "the Service selects dify-guard's pods",
      );
      const containerPort = (mainContainerOf(deploy).ports as Json[]).find((p) => p.name === port.targetPort);
      t.equal(containerPort?.containerPort, contract.webhook.securePort);
    }
  },
);

t.test(
  'helm TLS mode: the caBundle is the CA that signed the mounted certificate, for the Service DNS names',
  async (t) => {
    const svc = hooks.pods.clientConfig.service!;
    const ca = new X509Certificate(Buffer.from(hooks.pods.clientConfig.caBundle!, 'base64'));
    t.equal(hooks.secrets.clientConfig.caBundle, hooks.pods.clientConfig.caBundle, 'both webhooks trust the same CA');
    t.ok(ca.ca, 'a CA certificate');
    const deploy = find(full.objects, 'Deployment', svc.name);
    const volume = (podTemplateOf(deploy).spec.volumes as Json[]).find((v) => v.name === 'tls')!;
    const secret = find(full.objects, 'Secret', String((volume.secret as Json).secretName));
    t.equal(secret.type, 'kubernetes.io/tls');
    const data = secret.data as Record<string, string>;
    const cert = new X509Certificate(Buffer.from(data['tls.crt']!, 'base64'));
    t.ok(cert.verify(ca.publicKey), 'signed by the caBundle CA');
    t.ok(data['tls.key'], 'with its key');
    t.equal(data['ca.crt'], hooks.pods.clientConfig.caBundle, 'ca.crt kept beside it (for reuse on upgrade)');
    t.ok(
      cert.checkHost(`${svc.name}.${svc.namespace}.svc`),
      'valid for <service>.<namespace>.svc, the name the API server uses',
    );
    const mount = (mainContainerOf(deploy).volumeMounts as Json[]).find((m) => m.name === 'tls')!;
    t.equal(mount.mountPath, '/etc/dify-guard/tls');
    t.notOk(mount.subPath, 'a directory mount, so renewals reach the pod');
  },
);

t.test(
  'url mode: clientConfig.url = url + path with the given CA; nothing of dify-guard runs in the cluster',
  async (t) => {
    const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
    for (const [caBundle, expected] of [
      [Buffer.from(pem).toString('base64'), Buffer.from(pem).toString('base64')],
      [pem, Buffer.from(pem.trim()).toString('base64')],
    ]) {
      const { objects } = await renderChart({ webhook: { url: 'https://127.0.0.1:9443/', caBundle } });
      const c = configurations(objects);
      t.equal(c.pods.clientConfig.url, `https://127.0.0.1:9443${contract.webhook.mutatePodsPath}`);
      t.equal(c.secrets.clientConfig.url, `https://127.0.0.1:9443${contract.webhook.validateSecretsPath}`);
      t.equal(c.workloads.clientConfig.url, `https://127.0.0.1:9443${contract.webhook.validateWorkloadsPath}`);
      t.notOk(c.pods.clientConfig.service);
      t.equal(c.pods.clientConfig.caBundle, expected, 'base64 passes through, PEM is encoded');
      const guardObjects = objects.filter((o) => isGuard(labelsOf(o)) && !kindOf(o).endsWith('WebhookConfiguration'));
      t.same(
        guardObjects.map((o) => `${kindOf(o)}/${nameOf(o)}`),
        [],
        'no Deployment, Service, RBAC, PDB or TLS Secret',
      );
    }
    const missing = await template(withRequired({ webhook: { url: 'https://127.0.0.1:9443' } }));
    t.not(missing.status, 0);
    t.match(missing.stderr, /webhook\.caBundle is required with webhook\.url/);
    const http = await template(withRequired({ webhook: { url: 'http://127.0.0.1:9443', caBundle: 'eA==' } }));
    t.not(http.status, 0, 'the API server calls webhooks over HTTPS only');
  },
);

t.test('cert-manager mode: Certificate, CA injection annotation, no caBundle, no Helm-generated key', async (t) => {
  const { objects } = await renderChart({ webhook: { tls: { mode: 'certManager' } } });
  const c = configurations(objects);
  const certificate = ofKind(objects, 'Certificate').find((x) => !(x.spec as Json).isCA)!;
  for (const config of [c.mutating, c.validating]) {
    t.equal(annotationsOf(config)['cert-manager.io/inject-ca-from'], `${namespace}/${nameOf(certificate)}`);
  }
  t.notOk(c.pods.clientConfig.caBundle);
  const svcName = c.pods.clientConfig.service!.name;
  t.ok(((certificate.spec as Json).dnsNames as string[]).includes(`${svcName}.${namespace}.svc`));
  const deploy = find(objects, 'Deployment', svcName);
  const volume = (podTemplateOf(deploy).spec.volumes as Json[]).find((v) => v.name === 'tls')!;
  t.equal((volume.secret as Json).secretName, (certificate.spec as Json).secretName, "mounts the Certificate's Secret");
  t.notOk(
    ofKind(objects, 'Secret').some((s) => s.type === 'kubernetes.io/tls'),
    'cert-manager writes the TLS Secret',
  );
  t.equal(ofKind(objects, 'Issuer').length, 2, 'self-signed root and CA issuers when none is given');
  const given = await renderChart({
    webhook: { tls: { mode: 'certManager', certManager: { issuerRef: { name: 'corp-ca', kind: 'ClusterIssuer' } } } },
  });
  t.same(ofKind(given.objects, 'Issuer'), []);
  t.match((ofKind(given.objects, 'Certificate')[0]!.spec as Json).issuerRef, {
    name: 'corp-ca',
    kind: 'ClusterIssuer',
  });
});

t.test('existingSecret mode: mounts the given Secret, needs the CA', async (t) => {
  const { objects } = await renderChart({
    webhook: { tls: { mode: 'existingSecret', existingSecret: 'my-tls' }, caBundle: 'Y2E=' },
  });
  const c = configurations(objects);
  t.equal(c.pods.clientConfig.caBundle, 'Y2E=');
  const deploy = guardDeploymentOf(objects, c);
  t.equal(
    ((podTemplateOf(deploy).spec.volumes as Json[]).find((v) => v.name === 'tls')!.secret as Json).secretName,
    'my-tls',
  );
  t.notOk(ofKind(objects, 'Secret').some((s) => s.type === 'kubernetes.io/tls'));
  const noCa = await template(withRequired({ webhook: { tls: { mode: 'existingSecret', existingSecret: 'my-tls' } } }));
  t.match(noCa.stderr, /webhook\.caBundle is required with webhook\.tls\.mode=existingSecret/);
  const noSecret = await template(withRequired({ webhook: { tls: { mode: 'existingSecret' }, caBundle: 'Y2E=' } }));
  t.match(noSecret.stderr, /webhook\.tls\.existingSecret is required/);
});

t.test('dify-guard Deployment: 2 replicas spread over nodes, PDB, non-root, read-only root, probes', async (t) => {
  const deploy = guardDeploymentOf(full.objects);
  const spec = deploy.spec as Json;
  t.equal(spec.replicas, 2);
  t.match(
    spec.strategy,
    { rollingUpdate: { maxUnavailable: 0 } },
    'never below the requested replicas during a rollout',
  );
  const pod = podTemplateOf(deploy);
  t.equal(pod.metadata.labels?.[LABELS.name], contract.values.guardName);
  t.equal(pod.metadata.labels?.[LABELS.component], contract.components.webhook);
  t.match(pod.spec.securityContext, { runAsNonRoot: true, runAsUser: 65532 });
  t.match(pod.spec.affinity, {
    podAntiAffinity: {
      preferredDuringSchedulingIgnoredDuringExecution: [{ podAffinityTerm: { topologyKey: 'kubernetes.io/hostname' } }],
    },
  });
  const c = mainContainerOf(deploy);
  t.equal(c.image, `dify-guard/dify-guard:${packageVersion}`, 'tag = chart version = package.json version');
  t.match(c.securityContext, {
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    capabilities: { drop: ['ALL'] },
  });
  const health = (c.ports as Json[]).find((p) => p.containerPort === contract.webhook.healthPort)!;
  t.match(c.livenessProbe, { httpGet: { path: '/healthz', port: health.name } });
  t.match(c.readinessProbe, { httpGet: { path: '/readyz', port: health.name } });
  t.ok(c.resources);
  t.equal(pod.spec.serviceAccountName, nameOf(deploy));
  const pdb = find(full.objects, 'PodDisruptionBudget', nameOf(deploy));
  t.equal((pdb.spec as Json).minAvailable, 1);
  t.same(((pdb.spec as Json).selector as Json).matchLabels, (spec.selector as Json).matchLabels);
  const single = await renderChart({ webhook: { replicaCount: 1 } });
  t.same(ofKind(single.objects, 'PodDisruptionBudget'), [], 'no PDB that would block every drain of a single replica');
});

t.test('RBAC: PVC get/list/watch and Event create/patch, cluster-wide, nothing else', async (t) => {
  const deploy = guardDeploymentOf(full.objects);
  const role = find(full.objects, 'ClusterRole', nameOf(deploy));
  t.same(role.rules, [
    { apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
    { apiGroups: ['events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
  ]);
  const binding = find(full.objects, 'ClusterRoleBinding', nameOf(deploy));
  t.same(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: nameOf(role) });
  t.same(binding.subjects, [{ kind: 'ServiceAccount', name: nameOf(deploy), namespace }]);
  t.ok(find(full.objects, 'ServiceAccount', nameOf(deploy)));
  t.equal(ofKind(full.objects, 'Role').length + ofKind(full.objects, 'RoleBinding').length, 0);
});

t.test('webhook.enabled=false renders nothing of dify-guard', async (t) => {
  const { objects } = await renderChart({ webhook: { enabled: false } });
  t.same(
    objects.filter((o) => isGuard(labelsOf(o))).map((o) => `${kindOf(o)}/${nameOf(o)}`),
    [],
  );
  t.same(ofKind(objects, 'MutatingWebhookConfiguration'), []);
  t.same(ofKind(objects, 'ValidatingWebhookConfiguration'), []);
});
