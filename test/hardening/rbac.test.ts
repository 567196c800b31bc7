// dify-guard's RBAC as the chart renders it, applied to a real API server running the RBAC
// authorizer, then checked as dify-guard's service account: SubjectAccessReviews over a matrix of
// what it needs (PVC reads, Event writes, cluster-wide) and what it must not have, and the real
// `kubectl auth can-i --list`, which must list exactly those grants in any namespace, kube-system included.
import t from 'tap';
import { contract, expandName } from '../../src/contract.js';
import { findObject, kindOf, nameOf, renderChart, testValues, writeValues } from '../../harness/controlplane/chart.js';
import { startControlPlane } from '../../harness/controlplane/harness.js';
import { ensureNamespace } from '../../harness/controlplane/stack.js';
import { binary } from '../../harness/binaries.js';
import { run, waitFor } from '../../harness/commands.js';
import type { Json } from '../../harness/kube-rest.js';

const release = 'dify';
const namespace = 'dify';
const cp = await startControlPlane(t, { name: 'rbac' });
const rest = cp.rest();
for (const ns of [namespace, 'team-b']) await ensureNamespace(rest, ns);

// An in-cluster install (no webhook.url: dify-guard runs as the chart's Deployment), the one that renders RBAC.
const valuesFile = writeValues(cp.dir, 'rbac', testValues({ url: '', caBundle: '' }));
const rendered = await renderChart({ release, namespace, valuesFile, home: cp.dir });
const guardDeployment = findObject(rendered, 'Deployment', expandName(contract.names.guard, release));
const serviceAccountName = String(
  (((guardDeployment.spec as Json).template as Json).spec as Json).serviceAccountName ?? '',
);
const serviceAccountUser = `system:serviceaccount:${namespace}:${serviceAccountName}`;
// What the API server's authenticator gives a service account token.
const serviceAccountGroups = ['system:serviceaccounts', `system:serviceaccounts:${namespace}`, 'system:authenticated'];

const RBAC_KINDS: Record<string, (o: Json) => string> = {
  ServiceAccount: (o) => `/api/v1/namespaces/${namespaceOf(o)}/serviceaccounts`,
  Role: (o) => `/apis/rbac.authorization.k8s.io/v1/namespaces/${namespaceOf(o)}/roles`,
  RoleBinding: (o) => `/apis/rbac.authorization.k8s.io/v1/namespaces/${namespaceOf(o)}/rolebindings`,
  ClusterRole: () => '/apis/rbac.authorization.k8s.io/v1/clusterroles',
  ClusterRoleBinding: () => '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings',
};
const namespaceOf = (o: Json): string => String((o.metadata as Json).namespace ?? namespace);
// Every RBAC object of the whole chart, so a grant to dify-guard from anywhere in it would show.
const rbacObjects = rendered.filter((o) => kindOf(o) in RBAC_KINDS);

interface Access {
  verb: string;
  resource: string;
  group?: string;
  namespace?: string;
  subresource?: string;
  name?: string;
}

async function allowed(access: Access): Promise<boolean> {
  const review = await rest.ok('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
    body: {
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SubjectAccessReview',
      spec: {
        user: serviceAccountUser,
        groups: serviceAccountGroups,
        resourceAttributes: {
          verb: access.verb,
          resource: access.resource,
          group: access.group ?? '',
          namespace: access.namespace ?? '',
          ...(access.subresource ? { subresource: access.subresource } : {}),
          ...(access.name ? { name: access.name } : {}),
        },
      },
    },
  });
  return (review.status as Json | undefined)?.allowed === true;
}

const describe = (a: Access): string =>
  `${a.verb} ${a.resource}${a.subresource ? `/${a.subresource}` : ''}${a.group ? `.${a.group}` : ''}` +
  `${a.name ? ` ${a.name}` : ''} ${a.namespace ? `in ${a.namespace}` : 'cluster-wide'}`;

t.before(async () => {
  for (const o of rbacObjects) {
    const res = await rest.create((RBAC_KINDS[kindOf(o)] as (o: Json) => string)(o), o);
    if (res.status !== 201) throw new Error(`${kindOf(o)} ${nameOf(o)}: ${res.status} ${String(res.body.message)}`);
  }
  // The authorizer reads RBAC objects through informers: wait until the grant is in effect.
  await waitFor("the chart's RBAC to take effect", async () =>
    (await allowed({ verb: 'list', resource: 'persistentvolumeclaims' })) ? true : undefined,
  );
});

t.test("the chart binds its grants to the service account dify-guard's Deployment runs as", async (t) => {
  t.not(serviceAccountName, '', 'the Deployment names a service account');
  t.equal(
    namespaceOf(findObject(rendered, 'ServiceAccount', serviceAccountName)),
    namespace,
    'which the chart creates in the release namespace',
  );
  const subjects = rbacObjects
    .filter((o) => kindOf(o).endsWith('Binding'))
    .flatMap((b) => (b.subjects as Json[] | undefined) ?? []);
  t.ok(
    subjects.some((s) => s.kind === 'ServiceAccount' && s.name === serviceAccountName && s.namespace === namespace),
    'a binding names it',
  );
});

const everyNamespace = ['', namespace, 'team-b', 'kube-system'];
const granted: Access[] = [
  ...everyNamespace.flatMap((ns) =>
    ['get', 'list', 'watch'].map((verb) => ({ verb, resource: 'persistentvolumeclaims', namespace: ns })),
  ),
  ...everyNamespace.flatMap((ns) =>
    ['', 'events.k8s.io'].flatMap((group) =>
      ['create', 'patch'].map((verb) => ({ verb, resource: 'events', group, namespace: ns })),
    ),
  ),
];

const refused: Access[] = [
  ...['get', 'list', 'watch', 'update', 'patch', 'create', 'delete'].map((verb) => ({
    verb,
    resource: 'secrets',
    namespace,
  })),
  { verb: 'get', resource: 'secrets', namespace, name: expandName(contract.names.postgresqlSecret, release) },
  { verb: 'list', resource: 'secrets' },
  ...['create', 'update', 'patch', 'delete', 'deletecollection'].map((verb) => ({
    verb,
    resource: 'persistentvolumeclaims',
    namespace,
  })),
  { verb: 'update', resource: 'persistentvolumeclaims', subresource: 'status', namespace },
  ...['get', 'list', 'create'].map((verb) => ({ verb, resource: 'pods', namespace })),
  { verb: 'create', resource: 'pods', subresource: 'exec', namespace },
  { verb: 'get', resource: 'configmaps', namespace },
  ...['', 'events.k8s.io'].flatMap((group) =>
    ['delete', 'list', 'get', 'watch', 'update', 'deletecollection'].map((verb) => ({
      verb,
      resource: 'events',
      group,
      namespace,
    })),
  ),
  ...['mutatingwebhookconfigurations', 'validatingwebhookconfigurations'].flatMap((resource) =>
    ['get', 'list', 'update', 'patch', 'delete'].map((verb) => ({
      verb,
      resource,
      group: 'admissionregistration.k8s.io',
    })),
  ),
  { verb: 'create', resource: 'serviceaccounts', subresource: 'token', namespace },
  { verb: 'get', resource: 'serviceaccounts', namespace },
  { verb: 'get', resource: 'nodes' },
  { verb: 'get', resource: 'namespaces' },
  { verb: 'list', resource: 'namespaces' },
  { verb: 'get', resource: 'persistentvolumes' },
  ...['clusterroles', 'clusterrolebindings'].flatMap((resource) =>
    ['create', 'update', 'escalate', 'bind'].map((verb) => ({ verb, resource, group: 'rbac.authorization.k8s.io' })),
  ),
  { verb: 'impersonate', resource: 'users' },
  { verb: 'impersonate', resource: 'serviceaccounts', namespace },
];

t.test(
  'SubjectAccessReview: allowed exactly the PVC reads and Event writes, in every namespace and cluster-wide',
  async (t) => {
    for (const access of granted) t.equal(await allowed(access), true, `may ${describe(access)}`);
  },
);

t.test('SubjectAccessReview: refused everything else it does not need', async (t) => {
  for (const access of refused) t.equal(await allowed(access), false, `may not ${describe(access)}`);
});

t.test('in kube-system nothing beyond the cluster-wide grants', async (t) => {
  const resources = [
    'secrets',
    'configmaps',
    'pods',
    'serviceaccounts',
    'services',
    'endpoints',
    'deployments.apps',
    'daemonsets.apps',
    'leases.coordination.k8s.io',
    'roles.rbac.authorization.k8s.io',
    'rolebindings.rbac.authorization.k8s.io',
  ];
  for (const qualified of resources) {
    const [resource = '', ...group] = qualified.split('.');
    for (const verb of ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete']) {
      t.equal(
        await allowed({ verb, resource, group: group.join('.'), namespace: 'kube-system' }),
        false,
        `may not ${verb} ${qualified} in kube-system`,
      );
    }
  }
  t.equal(
    await allowed({ verb: '*', resource: '*', group: '*', namespace: 'kube-system' }),
    false,
    'no wildcard grant in kube-system',
  );
});

/** `kubectl auth can-i --list` as the service account (the admin, in system:masters, may impersonate it). */
async function canIList(ns: string): Promise<string[]> {
  const res = await run(binary('kubectl'), ['auth', 'can-i', '--list', `--as=${serviceAccountUser}`, '-n', ns], {
    env: cp.env(),
  });
  if (res.status !== 0) throw new Error(`kubectl auth can-i --list failed: ${res.stderr}`);
  // Rows of resource rules: "<resource>  [<non-resource URLs>]  [<resource names>]  [<verbs>]"; non-resource rows start blank.
  return res.stdout
    .split('\n')
    .slice(1)
    .filter((line) => /^\S/.test(line))
    .map((line) => {
      const [resource, ...brackets] = line.trim().split(/\s+(?=\[)/);
      return `${resource ?? ''} ${brackets.join(' ')}`.replace(/\s+/g, ' ').trim();
    })
    .sort();
}

const expectedRules = [
  'persistentvolumeclaims [] [] [get list watch]',
  'events [] [] [create patch]',
  'events.events.k8s.io [] [] [create patch]',
];
// Ignored: the review APIs that system:basic-user grants every authenticated user (asking about one's own
// access); the non-resource URLs (/api, /healthz, ...) come from system:discovery and system:public-info-viewer.
const everyAuthenticatedUser = [
  'selfsubjectaccessreviews.authorization.k8s.io [] [] [create]',
  'selfsubjectreviews.authentication.k8s.io [] [] [create]',
  'selfsubjectrulesreviews.authorization.k8s.io [] [] [create]',
];

for (const ns of [namespace, 'team-b', 'kube-system']) {
  t.test(`kubectl auth can-i --list in ${ns} lists exactly the chart's grants`, async (t) => {
    const rules = await canIList(ns);
    t.same(
      rules,
      [...expectedRules, ...everyAuthenticatedUser].sort(),
      'resource rules: the grants plus what every authenticated user has',
    );
  });
}
