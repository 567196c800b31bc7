// docs/dify-settings.md is the contract of what Dify 1.11.4, plugin daemon 0.5.2 and sandbox 0.2.12 need;
// this reads its tables and proves the env the chart renders (default values) meets them. It also runs
// dify-guard's pod mutator on the rendered Dify pods: the chart already gives what the webhook injects.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { mutatePod } from '../../src/admission/pod-mutation.js';
import { defaultGuardSettings } from '../../src/admission/settings.js';
import { ENV, LABELS, contract } from '../../src/contract.js';
import { repoRoot } from '../../harness/binaries.js';
import {
  allContainersOf,
  containersOf,
  kindOf,
  nameOf,
  ofKind,
  podTemplateOf,
  selects,
  workloads,
  type Container,
  type EnvVar,
  type Json,
} from '../../harness/helm.js';
import { componentContainer, componentWorkload, podLabelsOf, renderChart } from './support.js';

interface Row {
  name: string;
  requirement: string;
  from: string;
}

/** The rows of every `### <component>` table of docs/dify-settings.md. */
function contractTables(text: string): Map<string, Row[]> {
  const tables = new Map<string, Row[]>();
  let current: Row[] | undefined;
  for (const line of text.split('\n')) {
    const heading = /^### (\S+)$/.exec(line);
    if (heading) tables.set(heading[1]!, (current = []));
    else if (/^## /.test(line)) current = undefined;
    const cells = /^\| ([A-Z][A-Z0-9_]*) \| (.+) \| (\S+) \|$/.exec(line);
    if (current && cells) current.push({ name: cells[1]!, requirement: cells[2]!, from: cells[3]! });
  }
  return tables;
}

const tables = contractTables(readFileSync(join(repoRoot, 'docs/dify-settings.md'), 'utf8'));
const { objects } = await renderChart();
const services = ofKind(objects, 'Service');
const podLabels = (component: string): Record<string, string> => podLabelsOf(componentWorkload(objects, component));
const containerOf = (component: string): Container => componentContainer(objects, component);
const envIn = (component: string, name: string): EnvVar | undefined =>
  (containerOf(component).env ?? []).find((e) => e.name === name);

interface ServicePort {
  port: number;
  targetPort?: number | string;
}
/** The rendered Service `host`, checked to select `component`'s pods and to serve `port`, whose target the pod exposes. */
function serviceProblem(host: string, port: number, component: string): string | undefined {
  const svc = services.find((s) => nameOf(s) === host);
  if (!svc) return `no rendered Service ${host}`;
  const spec = svc.spec as { selector?: Record<string, string>; ports: ServicePort[] };
  const selected = spec.selector !== undefined && selects({ matchLabels: spec.selector }, podLabels(component));
  if (!selected) return `Service ${host} does not select ${component}`;
  const servicePort = spec.ports.find((p) => p.port === port);
  if (!servicePort) return `Service ${host} has no port ${port}`;
  const exposed = containersOf(componentWorkload(objects, component)).flatMap(
    (c) => (c.ports ?? []) as { name?: string; containerPort: number }[],
  );
  const target = servicePort.targetPort ?? port;
  if (!exposed.some((p) => p.name === target || p.containerPort === target))
    return `${component} exposes no port ${String(target)}`;
  return undefined;
}

/** One kind of requirement of docs/dify-settings.md: its pattern, and why an entry misses it (undefined when it does not). */
type Rule = [RegExp, (m: RegExpExecArray, component: string, entry: EnvVar) => string | undefined];

const urlProblem = (value: string | undefined, target: string): string | undefined => {
  const url = /^http:\/\/([a-z0-9-]+):(\d+)$/.exec(value ?? '');
  return url
    ? serviceProblem(url[1]!, Number(url[2]), target)
    : `${JSON.stringify(value)} is not http://<Service>:<port>`;
};

const redisUrlProblem = (value: string | undefined, target: string): string | undefined => {
  const url = new RegExp(`^redis://(?::\\$\\(${ENV.redisPassword}\\)@)?([a-z0-9-]+):(\\d+)/\\d+$`).exec(value ?? '');
  return url
    ? serviceProblem(url[1]!, Number(url[2]), target)
    : `${JSON.stringify(value)} is not a Redis URL without a literal password`;
};

const sameSecretKeyProblem = (entry: EnvVar, component: string, name: string): string | undefined => {
  const ref = entry.valueFrom?.secretKeyRef;
  const other = envIn(component, name)?.valueFrom?.secretKeyRef;
  return ref && JSON.stringify(ref) === JSON.stringify(other)
    ? undefined
    : `is not the Secret key of ${component}.${name}`;
};

const RULES: Rule[] = [
  [/^set$/, () => undefined],
  [/^= (.*)$/, (m, _c, e) => (e.value === m[1] ? undefined : `is ${JSON.stringify(e.value)}, not ${m[1]}`)],
  [/^secret$/, (_m, _c, e) => (e.valueFrom?.secretKeyRef && !('value' in e) ? undefined : 'is not a secretKeyRef')],
  [/^secret = ([a-z-]+)\.([A-Z0-9_]+)$/, (m, _c, e) => sameSecretKeyProblem(e, m[1]!, m[2]!)],
  [/^url -> ([a-z-]+)$/, (m, _c, e) => urlProblem(e.value, m[1]!)],
  [/^redis-url -> ([a-z-]+)$/, (m, _c, e) => redisUrlProblem(e.value, m[1]!)],
  [/^host -> ([a-z-]+)$/, (m, _c, e) => serviceProblem(e.value ?? '', servicePortOf(e.value ?? ''), m[1]!)],
  [
    /^port -> ([a-z-]+)$/,
    (m, c, e) => serviceProblem(envIn(c, e.name.replace(/_PORT$/, '_HOST'))?.value ?? '', Number(e.value), m[1]!),
  ],
];

/** Why `entry` does not meet `requirement` (undefined when it does). */
function problem(component: string, entry: EnvVar, requirement: string): string | undefined {
  for (const [pattern, check] of RULES) {
    const m = pattern.exec(requirement);
    if (m) return check(m, component, entry);
  }
  return `unknown requirement ${requirement}`;
}
const servicePortOf = (host: string): number =>
  (services.find((s) => nameOf(s) === host)?.spec as { ports?: ServicePort[] } | undefined)?.ports?.[0]?.port ?? -1;

t.test('the contract covers every component of the chart', async (t) => {
  const expected = [
    contract.components.api,
    contract.components.worker,
    contract.components.beat,
    contract.components.pluginDaemon,
    contract.components.sandbox,
    contract.components.web,
    contract.components.ssrfProxy,
    contract.components.migration,
  ];
  t.same([...tables.keys()].sort(), [...expected].sort());
  t.ok((tables.get(contract.components.api) ?? []).length > 30, 'the api table is read');
  for (const rows of tables.values())
    for (const row of rows) t.ok(row.from.length > 0, `${row.name}: names its upstream file`);
});

for (const [component, rows] of tables) {
  t.test(`${component}: the rendered env meets docs/dify-settings.md`, async (t) => {
    for (const row of rows) {
      const entries = (containerOf(component).env ?? []).filter((e) => e.name === row.name);
      t.equal(entries.length, 1, `${row.name} is set once`);
      if (entries.length === 1)
        t.equal(problem(component, entries[0]!, row.requirement), undefined, `${row.name}: ${row.requirement}`);
    }
  });
}

t.test('a requirement the chart does not meet is reported (the checker can fail)', async (t) => {
  const api = contract.components.api;
  t.match(problem(api, { name: 'X', value: 'http://dify-sandbox:9999' }, 'url -> sandbox'), /has no port 9999/);
  t.match(problem(api, { name: 'X', value: 'http://dify-web:3000' }, 'url -> sandbox'), /does not select sandbox/);
  t.match(
    problem(api, { name: 'X', value: 'redis://:pw@dify-redis-master:6379/1' }, 'redis-url -> redis'),
    /without a literal password/,
  );
  t.match(
    problem(api, envIn(api, 'PLUGIN_DAEMON_KEY')!, 'secret = sandbox.API_KEY'),
    /is not the Secret key of sandbox\.API_KEY/,
  );
  t.match(problem(api, { name: 'X', value: 'weaviate' }, '= pgvector'), /not pgvector/);
});

t.test("dify-guard's pod mutator changes nothing in the rendered Dify pods (chart and webhook agree)", async (t) => {
  const variants = [
    ['defaults (Redis auth on, chart Secret)', {}, true],
    ['Redis auth off', { pluginDaemon: { redis: { authEnabled: false } } }, false],
    [
      'an existing Redis Secret',
      { pluginDaemon: { redis: { existingSecret: 'corp-redis', existingSecretPasswordKey: 'pw' } } },
      true,
    ],
  ] as const;
  for (const [what, values, auth] of variants) {
    const rendered = Object.keys(values).length === 0 ? objects : (await renderChart(values as Json)).objects;
    let checked = 0;
    for (const w of workloads(rendered)) {
      const template = podTemplateOf(w);
      const component = template.metadata.labels?.[LABELS.component] ?? '';
      if (!contract.podRules.injectCredentials.includes(component)) continue;
      const pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { ...template.metadata, namespace: 'dify' },
        spec: template.spec,
      } as Json;
      const result = mutatePod(pod as Parameters<typeof mutatePod>[0], defaultGuardSettings);
      t.same(
        result,
        { patch: [], warnings: [], changes: [] },
        `${what}: ${kindOf(w)} ${nameOf(w)}: no patch, no warning`,
      );
      const declared = allContainersOf(w).some((c) => (c.env ?? []).some((e) => e.name === ENV.redisPassword));
      t.equal(declared, auth, `${what}: ${nameOf(w)}: Redis auth`);
      checked++;
    }
    t.equal(checked, contract.podRules.injectCredentials.length, what);
  }
});
