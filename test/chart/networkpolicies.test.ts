// NetworkPolicies, evaluated against the labels of the pods the chart renders (the API server's selector
// rules, harness/helm.ts `selects`): a renamed label or component breaks these tests, not the cluster.
import t from 'tap';
import { LABELS, contract } from '../../src/contract.js';
import {
  containersOf,
  kindOf,
  nameOf,
  ofKind,
  selects,
  workloads,
  type Json,
  type LabelSelector,
} from '../../harness/helm.js';
import { componentWorkload, podLabelsOf, renderChart } from './support.js';

interface Peer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: Json;
}
interface Port {
  port?: number | string;
  protocol?: string;
}
interface Rule {
  from?: Peer[];
  to?: Peer[];
  ports?: Port[];
}
interface PolicySpec {
  podSelector: LabelSelector;
  policyTypes: string[];
  ingress?: Rule[];
  egress?: Rule[];
}

const { objects } = await renderChart();
const policies = ofKind(objects, 'NetworkPolicy');
const specOf = (p: Json): PolicySpec => p.spec as PolicySpec;

/** Pod labels per component, as rendered (one pod template per workload). */
const pods = workloads(objects).map((w) => ({ name: nameOf(w), labels: podLabelsOf(w) }));
const podOf = (component: string): Record<string, string> => {
  const found = pods.find((p) => p.labels[LABELS.component] === component);
  if (!found) throw new Error(`no rendered pod of component ${component}`);
  return found.labels;
};
const policiesSelecting = (labels: Record<string, string>): PolicySpec[] =>
  policies.map(specOf).filter((s) => selects(s.podSelector, labels));

/** The peer covers the release's namespace: no namespaceSelector (its own) or an empty one (every namespace). */
const anyNamespace = (peer: Peer): boolean =>
  peer.namespaceSelector === undefined || Object.keys(peer.namespaceSelector).length === 0;

/** True when some rule lets a pod with these labels (in the release's namespace) in on that port. */
function admits(
  rules: Rule[] | undefined,
  peers: 'from' | 'to',
  labels: Record<string, string>,
  port: number | string,
): boolean {
  return (rules ?? []).some((rule) => {
    const portOk = !rule.ports || rule.ports.some((p) => p.port === undefined || p.port === port);
    const list = rule[peers];
    const peerOk =
      !list || list.some((peer) => !peer.ipBlock && selects(peer.podSelector, labels) && anyNamespace(peer));
    return portOk && peerOk;
  });
}

const c = contract.components;
const users = [c.api, c.worker, c.beat, c.pluginDaemon, c.migration];
const others = [c.web, c.sandbox, c.ssrfProxy, c.redis, c.postgresql].filter((x) => !users.includes(x));

t.test('rendered by default: sandbox, PostgreSQL, Redis and dify-guard, plain networking.k8s.io/v1', async (t) => {
  t.equal(policies.length, 4);
  for (const p of policies) t.equal(p.apiVersion, 'networking.k8s.io/v1', nameOf(p));
  for (const component of [c.sandbox, c.postgresql, c.redis]) {
    t.equal(policiesSelecting(podOf(component)).length, 1, `${component} is selected once`);
  }
});

t.test('PostgreSQL and Redis accept exactly the components that use them, on their port', async (t) => {
  for (const [component, port] of [
    [c.postgresql, 'tcp-postgresql'],
    [c.redis, 'tcp-redis'],
  ] as const) {
    const [policy] = policiesSelecting(podOf(component));
    t.same(policy!.policyTypes, ['Ingress'], `${component}: ingress only`);
    for (const user of users) t.ok(admits(policy!.ingress, 'from', podOf(user), port), `${component} admits ${user}`);
    for (const other of others)
      t.notOk(admits(policy!.ingress, 'from', podOf(other), port), `${component} refuses ${other}`);
    const named = containersOf(componentWorkload(objects, component))
      .flatMap((x) => (x.ports ?? []) as { name?: string }[])
      .map((x) => x.name);
    t.ok(named.includes(port), `${component}: the policy's port name is a container port`);
    const foreign = { ...podOf(c.api), [LABELS.instance]: 'another-release' };
    t.notOk(admits(policy!.ingress, 'from', foreign, port), `${component} refuses another release's api`);
  }
});

t.test('the sandbox reaches only the ssrf-proxy and DNS, and only api and worker reach it', async (t) => {
  const [policy] = policiesSelecting(podOf(c.sandbox));
  t.same(policy!.policyTypes, ['Ingress', 'Egress']);
  t.ok(admits(policy!.egress, 'to', podOf(c.ssrfProxy), 3128), 'to the ssrf-proxy');
  for (const target of [c.postgresql, c.redis, c.pluginDaemon, c.api, c.web]) {
    for (const port of [5432, 6379, 5002, 5001, 3000, 'tcp-postgresql', 'tcp-redis']) {
      t.notOk(admits(policy!.egress, 'to', podOf(target), port), `not to ${target}:${port}`);
    }
  }
  const dns = (policy!.egress ?? []).filter((r) => !r.to);
  const dnsPorts = [
    { port: 53, protocol: 'UDP' },
    { port: 53, protocol: 'TCP' },
  ];
  t.same(
    dns.flatMap((r) => r.ports ?? []),
    dnsPorts,
    'DNS: only port 53 to anywhere',
  );
  for (const caller of [c.api, c.worker])
    t.ok(admits(policy!.ingress, 'from', podOf(caller), 8194), `${caller} reaches it`);
  for (const other of [c.web, c.pluginDaemon, c.ssrfProxy, c.beat]) {
    t.notOk(admits(policy!.ingress, 'from', podOf(other), 8194), `${other} does not`);
  }
});

t.test(
  'dify-guard stays reachable by the API server (ingress open); it reaches only PostgreSQL, the API and DNS',
  async (t) => {
    const guard = pods.find((p) => p.labels[LABELS.name] === contract.values.guardName);
    t.ok(guard, 'dify-guard pods are rendered');
    const [own, ...more] = policiesSelecting(guard!.labels);
    t.same(more, [], 'one NetworkPolicy selects dify-guard');
    t.same(
      own!.policyTypes,
      ['Egress'],
      'egress only: the API server calls the webhook from an address no selector names',
    );
    const otherNamespace = (peer: Peer): boolean =>
      peer.namespaceSelector !== undefined && Object.keys(peer.namespaceSelector).length === 0;
    const pgRule = own!.egress!.find((r) =>
      (r.to ?? []).some((p) => otherNamespace(p) && selects(p.podSelector, podOf(c.postgresql))),
    );
    t.same(
      pgRule?.ports,
      [{ port: 'tcp-postgresql', protocol: 'TCP' }],
      'PostgreSQL pods of any namespace, on their port only',
    );
    for (const other of [c.api, c.redis, c.pluginDaemon, c.sandbox]) {
      t.notOk(admits(own!.egress, 'to', podOf(other), 'tcp-postgresql'), `not ${other}`);
    }
    const portsOf = (r: Rule): (number | string | undefined)[] => (r.ports ?? []).map((p) => p.port);
    t.same(
      own!.egress!.map(portsOf),
      [['tcp-postgresql'], [443, 6443], [53, 53]],
      'nothing but PostgreSQL, the API server and DNS',
    );
    const narrowed = await renderChart({ networkPolicy: { difyGuard: { apiServer: { cidrs: ['10.0.0.10/32'] } } } });
    const ownNarrowed = ofKind(narrowed.objects, 'NetworkPolicy')
      .map(specOf)
      .find((s) => selects(s.podSelector, guard!.labels))!;
    t.same(ownNarrowed.egress![1]!.to, [{ ipBlock: { cidr: '10.0.0.10/32' } }], 'apiServer.cidrs narrows the API rule');
    const [pg] = policiesSelecting(podOf(c.postgresql));
    const guardPeer = (pg!.ingress ?? [])
      .flatMap((r) => r.from ?? [])
      .find((p) => p.namespaceSelector && selects(p.podSelector, guard!.labels));
    t.ok(guardPeer, 'networkPolicy.postgresql.allowDifyGuard: dify-guard pods of any namespace');
    t.same(guardPeer!.namespaceSelector, {}, 'any namespace (one dify-guard serves every release)');
    const without = await renderChart({ networkPolicy: { postgresql: { allowDifyGuard: false } } });
    const pgOff = ofKind(without.objects, 'NetworkPolicy')
      .map(specOf)
      .find((s) => selects(s.podSelector, podOf(c.postgresql)))!;
    t.notOk(
      (pgOff.ingress ?? []).flatMap((r) => r.from ?? []).some((p) => selects(p.podSelector, guard!.labels)),
      'switchable',
    );
  },
);

t.test('switchable: networkPolicy.enabled=false renders none; extraFrom peers are added', async (t) => {
  const off = await renderChart({ networkPolicy: { enabled: false } });
  t.same(ofKind(off.objects, 'NetworkPolicy'), []);
  const backup = { podSelector: { matchLabels: { app: 'backup' } } };
  const extraFrom = [backup];
  const extra = await renderChart({ networkPolicy: { postgresql: { extraFrom }, redis: { extraFrom } } });
  for (const p of ofKind(extra.objects, 'NetworkPolicy').filter(
    (o) => !['dify-sandbox', 'dify-guard'].includes(nameOf(o)),
  )) {
    const port = specOf(p).ingress![0]!.ports![0]!.port!;
    t.ok(admits(specOf(p).ingress, 'from', { app: 'backup' }, port), `${nameOf(p)} admits the extra peer`);
  }
  t.equal(kindOf(extra.objects.find((o) => kindOf(o) === 'NetworkPolicy')!), 'NetworkPolicy');
});
