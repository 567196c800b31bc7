// How Dify is reached: the Ingress with the routes of Dify's own nginx (no /plugin: Dify has none),
// the optional MetalLB LoadBalancer in front of an nginx proxy with the same routes, and the
// storage classes of the PVCs (Nutanix CSI). Where api and worker run on that storage: api-storage.test.ts.
import t from 'tap';
import { contract } from '../../src/contract.js';
import { annotationsOf, find, nameOf, ofKind, template, type Json } from '../../harness/helm.js';
import { mainContainerOf, named, release, releaseName, renderChart, withRequired } from './support.js';

const svcName = (component: string): string => releaseName('component', component);
// Dify 1.11's docker/nginx/conf.d/default.conf.template (docs/dify-facts.md).
const difyRoutes: [string, string, number][] = [
  ['/console/api', svcName(contract.components.api), 5001],
  ['/api', svcName(contract.components.api), 5001],
  ['/v1', svcName(contract.components.api), 5001],
  ['/files', svcName(contract.components.api), 5001],
  ['/mcp', svcName(contract.components.api), 5001],
  ['/triggers', svcName(contract.components.api), 5001],
  ['/e/', svcName(contract.components.pluginDaemon), 5002],
  ['/explore', svcName(contract.components.web), 3000],
  ['/', svcName(contract.components.web), 3000],
];

interface Path {
  path: string;
  pathType: string;
  backend: { service: { name: string; port: { number: number } } };
}
const rulesOf = (ingress: Json): { host?: string; http: { paths: Path[] } }[] => (ingress.spec as Json).rules as never;

// The Ingress sends /e/ through the chart's nginx, which adds Dify-Hook-Url (test/programs/nginx.test.ts runs it).
const ingressRoutes = difyRoutes.map(([path, service, port]): [string, string, number] =>
  path === '/e/' ? [path, svcName('proxy'), 80] : [path, service, port],
);

t.test("Ingress <release>: exactly Dify's routes, each to an existing Service port", async (t) => {
  const { objects } = await renderChart();
  const ingress = named(objects, 'Ingress', 'ingress');
  const rules = rulesOf(ingress);
  t.equal(rules.length, 1);
  t.notOk(rules[0]!.host, 'every host by default');
  const paths = rules[0]!.http.paths;
  t.same(
    paths.map((p) => [p.path, p.backend.service.name, p.backend.service.port.number]),
    ingressRoutes,
  );
  t.ok(paths.every((p) => p.pathType === 'Prefix'));
  t.notOk(
    paths.some((p) => p.path.startsWith('/plugin')),
    'no invented /plugin route',
  );
  for (const p of paths) {
    const svc = find(objects, 'Service', p.backend.service.name);
    t.ok(
      ((svc.spec as Json).ports as Json[]).some((port) => port.port === p.backend.service.port.number),
      `${p.path}: Service port exists`,
    );
  }
});

t.test(
  "Ingress /e/: through the chart's nginx (a ClusterIP Service without the LoadBalancer), or straight to the daemon",
  async (t) => {
    const { objects } = await renderChart();
    const proxy = find(objects, 'Service', svcName('proxy'));
    t.equal((proxy.spec as Json).type, 'ClusterIP', 'no LoadBalancer unless loadBalancer.enabled');
    t.same(annotationsOf(proxy), {}, 'no MetalLB annotations on the ClusterIP Service');
    const conf = String((find(objects, 'ConfigMap', svcName('proxy')).data as Json)['default.conf']);
    t.match(conf, /proxy_set_header Dify-Hook-Url \$dify_scheme:\/\/\$host\$request_uri;/);
    const direct = await renderChart({ ingress: { pluginEndpointsThroughProxy: false } });
    const directIngress = named(direct.objects, 'Ingress', 'ingress');
    const e = rulesOf(directIngress)[0]!.http.paths.find((p) => p.path === '/e/')!;
    t.same([e.backend.service.name, e.backend.service.port.number], [svcName(contract.components.pluginDaemon), 5002]);
    t.notOk(
      direct.objects.some((o) => nameOf(o) === svcName('proxy')),
      'no proxy when nothing needs it',
    );
  },
);

t.test('Ingress class, host, TLS and annotations are configurable', async (t) => {
  const { objects } = await renderChart({
    ingress: { className: 'nginx', host: 'dify.example.com', tls: { enabled: true }, annotations: { 'a/b': 'c' } },
  });
  const ingress = named(objects, 'Ingress', 'ingress');
  const spec = ingress.spec as Json;
  t.equal(spec.ingressClassName, 'nginx');
  t.equal(rulesOf(ingress)[0]!.host, 'dify.example.com');
  t.same(spec.tls, [{ hosts: ['dify.example.com'], secretName: `${release}-tls` }]);
  t.equal(annotationsOf(ingress)['a/b'], 'c');
  const noHost = await template(withRequired({ ingress: { tls: { enabled: true } } }));
  t.not(noHost.status, 0);
  t.match(noHost.stderr, /ingress\.tls\.enabled needs ingress\.host/);
  const off = await renderChart({ ingress: { enabled: false } });
  t.same(ofKind(off.objects, 'Ingress'), []);
});

t.test('MetalLB: a LoadBalancer Service with address and pool annotations, nginx with the same routes', async (t) => {
  const { objects } = await renderChart({
    loadBalancer: { enabled: true, loadBalancerIP: '192.0.2.10', addressPool: 'dify-pool' },
  });
  const proxy = svcName('proxy');
  const svc = find(objects, 'Service', proxy);
  const spec = svc.spec as Json;
  t.equal(spec.type, 'LoadBalancer');
  t.equal(spec.loadBalancerIP, '192.0.2.10');
  t.match(annotationsOf(svc), {
    'metallb.universe.tf/address-pool': 'dify-pool',
    'metallb.io/address-pool': 'dify-pool',
    'metallb.universe.tf/loadBalancerIPs': '192.0.2.10',
    'metallb.io/loadBalancerIPs': '192.0.2.10',
  });
  const conf = String((find(objects, 'ConfigMap', proxy).data as Json)['default.conf']);
  for (const [path, service, port] of difyRoutes) {
    t.match(
      conf,
      new RegExp(`location ${path.replace(/\//g, '\\/')} \\{\\s+proxy_pass http://${service}:${port};`),
      `nginx ${path}`,
    );
  }
  t.match(
    conf,
    /proxy_set_header Dify-Hook-Url \$dify_scheme:\/\/\$host\$request_uri;/,
    '/e/ keeps the Dify-Hook-Url header',
  );
  const deploy = find(objects, 'Deployment', proxy);
  t.equal(mainContainerOf(deploy).readinessProbe ? 'probe' : 'none', 'probe');
  // The proxy is a Dify pod that dify-guard never treats.
  t.notOk((contract.podRules.injectCredentials as string[]).includes('proxy'));
  const none = await renderChart({ ingress: { enabled: false } });
  t.notOk(
    none.objects.some((o) => nameOf(o) === proxy),
    'no proxy without the LoadBalancer and the Ingress',
  );
});

t.test('storage classes: global (e.g. Nutanix CSI) and per component, on every PVC', async (t) => {
  const pvcSpecs = (objects: Json[]): [string, Json][] => [
    ...ofKind(objects, 'PersistentVolumeClaim').map((p) => [nameOf(p), p.spec as Json] as [string, Json]),
    ...ofKind(objects, 'StatefulSet').flatMap((s) =>
      (((s.spec as Json).volumeClaimTemplates ?? []) as Json[]).map(
        (c) => [`${nameOf(c)}-${nameOf(s)}-0`, c.spec as Json] as [string, Json],
      ),
    ),
  ];
  const global = await renderChart({ global: { storageClass: 'nutanix-volume' } });
  const specs = pvcSpecs(global.objects);
  t.ok(specs.length >= 4, 'postgresql, redis, storage, plugin daemon');
  for (const [name, spec] of specs) t.equal(spec.storageClassName, 'nutanix-volume', name);
  t.ok(specs.some(([n]) => n === releaseName('postgresqlPvc')));

  const mixed = await renderChart({
    global: { storageClass: 'nutanix-volume' },
    postgresql: { persistence: { storageClass: 'nutanix-db', size: '50Gi' } },
  });
  const pg = pvcSpecs(mixed.objects).find(([n]) => n === releaseName('postgresqlPvc'))![1];
  t.equal(pg.storageClassName, 'nutanix-db');
  t.same(pg.resources, { requests: { storage: '50Gi' } });

  const def = await renderChart();
  for (const [name, spec] of pvcSpecs(def.objects))
    t.notOk('storageClassName' in spec, `${name}: cluster default class`);
});
