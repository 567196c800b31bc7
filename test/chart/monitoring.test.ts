// dify-guard's monitoring objects, all off by default: the PrometheusRule the chart renders passes the real
// `promtool check rules` and the `promtool test rules` unit tests of test/fixtures/monitoring/ (each alert
// fires on one series and not on another); the Grafana dashboard queries only metrics that dify-guard
// exports (src/metrics.ts); the ServiceMonitor scrapes the dify-guard Service's metrics port.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parse, stringify } from 'yaml';
import { contract } from '../../src/contract.js';
import { METRIC_NAMES, METRIC_SPECS } from '../../src/metrics.js';
import { binary, repoRoot } from '../../harness/binaries.js';
import { run, type CommandResult } from '../../harness/commands.js';
import {
  chartDir,
  containersOf,
  deepMerge,
  find,
  helm,
  labelsOf,
  nameOf,
  ofKind,
  selects,
  template,
  valuesFile,
  type Json,
  type LabelSelector,
} from '../../harness/helm.js';
import { namespace, release, releaseName, renderChart, withRequired } from './support.js';

const guardName = releaseName('guard');
const on = { enabled: true };
const ALL_ON = { monitoring: { serviceMonitor: on, prometheusRule: on, grafanaDashboard: on } };
const fixture = join(repoRoot, 'test/fixtures/monitoring/dify-guard-alerts.promtool.yaml');
const readme = readFileSync(join(chartDir, 'README.md'), 'utf8');

// The series Prometheus itself writes for every target.
const PROMETHEUS_SERIES = ['up'];

interface Alert {
  alert: string;
  expr: string;
  for?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}
interface RuleGroup {
  name: string;
  rules: Alert[];
}
interface ExpectedAlert {
  exp_labels?: Record<string, string>;
  exp_annotations?: Record<string, string>;
}
interface AlertTest {
  eval_time: string;
  alertname: string;
  exp_alerts: ExpectedAlert[];
}
interface UnitTests {
  tests: { name: string; alert_rule_test: AlertTest[] }[];
}

const work = mkdtempSync(join(tmpdir(), 'dify-monitoring-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
let runs = 0;

const renderMonitoring = async (extra: Json = {}): Promise<Json[]> =>
  (await renderChart(deepMerge(ALL_ON, extra), { release, namespace })).objects;
const groupsOf = (objects: Json[]): RuleGroup[] =>
  (find(objects, 'PrometheusRule', guardName).spec as { groups: RuleGroup[] }).groups;
const alertsOf = (groups: RuleGroup[]): Alert[] => groups.flatMap((g) => g.rules);
const fixtureTests = (): UnitTests => parse(readFileSync(fixture, 'utf8')) as UnitTests;

/** An annotation as Prometheus expands it for an alert with these labels (the rules use only {{ $labels.x }}). */
function expand(text: string, labels: Record<string, string>): string {
  const out = text.replace(
    /\{\{ \$labels\.([A-Za-z_][A-Za-z0-9_]*) \}\}/g,
    (_, name: string) => labels[name] ?? `<no label ${name}>`,
  );
  if (out.includes('{{')) throw new Error(`an annotation uses a template this test does not expand: ${text}`);
  return out;
}

/** The fixture with each expected alert's annotations filled from the rendered rule. */
function withAnnotations(tests: UnitTests, alerts: Alert[]): UnitTests {
  for (const test of tests.tests) {
    for (const check of test.alert_rule_test) {
      const rule = alerts.find((a) => a.alert === check.alertname);
      if (!rule) continue; // promtool then reports the unknown alert name itself
      for (const expected of check.exp_alerts) {
        const labels = { ...expected.exp_labels };
        expected.exp_annotations = Object.fromEntries(
          Object.entries(rule.annotations).map(([k, v]) => [k, expand(v, labels)]),
        );
      }
    }
  }
  return tests;
}

/** promtool on the rendered rules and the unit tests, side by side in a fresh folder (rule_files are relative). */
async function promtool(
  groups: RuleGroup[],
  args: (files: { rules: string; tests: string }) => string[],
): Promise<CommandResult> {
  const dir = join(work, `run-${++runs}`);
  mkdirSync(dir);
  const files = { rules: join(dir, 'dify-guard-rules.yaml'), tests: join(dir, 'dify-guard-alerts.promtool.yaml') };
  writeFileSync(files.rules, stringify({ groups }));
  writeFileSync(files.tests, stringify(withAnnotations(fixtureTests(), alertsOf(groups))));
  return run(binary('promtool'), args(files), { cwd: dir, timeoutMs: 120_000, captureStdout: true });
}

/** The metric names a PromQL expression reads: every name before a `{` and every dify_guard_ name. */
function metricsIn(promql: string): string[] {
  const selected = promql.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)\s*\{/g);
  const names = [...selected, ...promql.matchAll(/\b(dify_guard_[A-Za-z0-9_]+)/g)].map((m) => m[1]!);
  return [...new Set(names)];
}

/** The dify-guard metric a series name belongs to (a histogram's _bucket, _sum and _count are its own). */
const knownMetrics = new Map<string, string>([
  ...Object.values(METRIC_SPECS).map((s): [string, string] => [s.name, s.type]),
]);
function metricOf(series: string): string | undefined {
  if (knownMetrics.has(series)) return series;
  const base = series.replace(/_(bucket|sum|count)$/, '');
  return knownMetrics.get(base) === 'histogram' ? base : undefined;
}

/**
 * The labels an expression groups or matches dify-guard metrics by (`sum by (x)` and `{x="..."}`), checked against
 * METRIC_SPECS; the target labels that Prometheus adds (job, namespace) and metrics not yet in METRIC_SPECS are skipped.
 */
function labelsUsed(promql: string): { metric: string; name: string; known: boolean }[] {
  const specs = Object.values(METRIC_SPECS) as { name: string; labels: readonly string[] }[];
  const spec = specs.find((s) => metricsIn(promql).includes(s.name));
  if (!spec) return [];
  const grouped = [...promql.matchAll(/\bby \(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((l) => l.trim()));
  const matched = [...promql.matchAll(/([a-z_]+)=~?"/g)].map((m) => m[1]!);
  return [...new Set([...grouped, ...matched])]
    .filter((l) => !['job', 'namespace'].includes(l))
    .map((name) => ({ metric: spec.name, name, known: spec.labels.includes(name) }));
}

t.test('a default install renders none of the monitoring objects; each switch renders only its own', async (t) => {
  const plain = (await renderChart({}, { release, namespace })).objects;
  t.same(ofKind(plain, 'ServiceMonitor'), []);
  t.same(ofKind(plain, 'PrometheusRule'), []);
  t.notOk(
    ofKind(plain, 'ConfigMap').some((c) => labelsOf(c).grafana_dashboard),
    'no dashboard ConfigMap',
  );
  for (const key of ['serviceMonitor', 'prometheusRule', 'grafanaDashboard'] as const) {
    const objects = (await renderChart({ monitoring: { [key]: on } }, { release, namespace })).objects;
    t.equal(ofKind(objects, 'ServiceMonitor').length, key === 'serviceMonitor' ? 1 : 0, `${key}: ServiceMonitor`);
    t.equal(ofKind(objects, 'PrometheusRule').length, key === 'prometheusRule' ? 1 : 0, `${key}: PrometheusRule`);
    t.equal(
      ofKind(objects, 'ConfigMap').filter((c) => labelsOf(c).grafana_dashboard === '1').length,
      key === 'grafanaDashboard' ? 1 : 0,
      `${key}: dashboard`,
    );
  }
});

t.test('the rendered PrometheusRule passes `promtool check rules` with every lint on', async (t) => {
  const groups = groupsOf(await renderMonitoring());
  const r = await promtool(groups, ({ rules }) => ['check', 'rules', '--lint=all', '--lint-fatal', rules]);
  t.equal(r.status, 0, r.stdout + r.stderr);
  t.match(r.stdout + r.stderr, new RegExp(`SUCCESS: ${alertsOf(groups).length} rules found`));
});

t.test('`promtool test rules`: every alert fires on its series and stays quiet on the others', async (t) => {
  const alerts = alertsOf(groupsOf(await renderMonitoring()));
  t.same(alerts.map((a) => a.alert).sort(), [
    'DifyGuardLiteralPasswordInTemplate',
    'DifyGuardMigrationEnabledInTemplate',
    'DifyGuardPvcCacheNotSynced',
    'DifyGuardSecretChangesDenied',
    'DifyGuardSecretReplacedUnderPvc',
    'DifyGuardUnavailable',
  ]);
  const checks = fixtureTests().tests.flatMap((test) => test.alert_rule_test);
  for (const { alert } of alerts) {
    t.ok(
      checks.some((c) => c.alertname === alert && c.exp_alerts.length > 0),
      `${alert}: a case where it fires`,
    );
    t.ok(
      checks.some((c) => c.alertname === alert && c.exp_alerts.length === 0),
      `${alert}: a case where it does not`,
    );
  }
  const r = await promtool(groupsOf(await renderMonitoring()), ({ tests }) => ['test', 'rules', tests]);
  t.equal(r.status, 0, r.stdout + r.stderr);
  t.match(r.stdout + r.stderr, /SUCCESS/);
});

t.test(
  'thresholds, durations and severities come from values: the unit tests written for the defaults then fail',
  async (t) => {
    const alerts = {
      unavailable: { for: '30m', severity: 'page' },
      secretChangesDenied: { window: '1h', threshold: 3, severity: 'ticket' },
    };
    const groups = groupsOf(await renderMonitoring({ monitoring: { prometheusRule: { alerts } } }));
    const unavailable = alertsOf(groups).find((a) => a.alert === 'DifyGuardUnavailable')!;
    const denied = alertsOf(groups).find((a) => a.alert === 'DifyGuardSecretChangesDenied')!;
    t.equal(unavailable.for, '30m');
    t.equal(unavailable.labels.severity, 'page');
    t.match(denied.expr, /\[1h\]/);
    t.match(denied.expr, /offset 1h/);
    t.match(denied.expr, /> 3$/);
    t.equal(denied.labels.severity, 'ticket');
    const r = await promtool(groups, ({ tests }) => ['test', 'rules', tests]);
    t.equal(r.status, 1, 'promtool test rules fails');
    t.match(r.stdout + r.stderr, /alertname: DifyGuardUnavailable/);
    t.match(r.stdout + r.stderr, /alertname: DifyGuardSecretChangesDenied/);
  },
);

t.test('seriesSelector replaces the ServiceMonitor job and namespace in every expression', async (t) => {
  const seriesSelector = 'job="kubernetes-pods",app="dify-guard"';
  const groups = groupsOf(await renderMonitoring({ monitoring: { prometheusRule: { seriesSelector } } }));
  for (const a of alertsOf(groups)) {
    t.match(a.expr, /\{job="kubernetes-pods",app="dify-guard"[,}]/, a.alert);
    t.notMatch(a.expr, new RegExp(`job="${guardName}"`), a.alert);
  }
  const r = await promtool(groups, ({ rules }) => ['check', 'rules', rules]);
  t.equal(r.status, 0, r.stdout + r.stderr);
});

t.test('every alert reads only dify-guard metrics, has a severity, and tells the operator what to run', async (t) => {
  const alerts = alertsOf(groupsOf(await renderMonitoring()));
  for (const a of alerts) {
    for (const series of metricsIn(a.expr)) {
      t.ok(
        metricOf(series) ?? PROMETHEUS_SERIES.includes(series),
        `${a.alert}: ${series} is a dify-guard metric or a Prometheus series`,
      );
    }
    for (const label of labelsUsed(a.expr))
      t.ok(label.known, `${a.alert}: ${label.metric} has the label ${label.name}`);
    t.match(
      a.expr,
      new RegExp(`job="${guardName}",namespace="${namespace}"`),
      `${a.alert}: scoped to this release's dify-guard`,
    );
    t.ok(a.labels.severity, `${a.alert}: severity`);
    t.ok(a.annotations.summary, `${a.alert}: summary`);
    const command = new RegExp(`\`kubectl [a-z]+ [^\`]*-n ${namespace}|\`kubectl get events -A`);
    t.match(a.annotations.description, command, `${a.alert}: a kubectl command`);
    t.ok(readme.includes(`#### ${a.alert}`), `${a.alert}: a runbook section in chart/README.md`);
  }
  const runbookBaseUrl = 'https://git.example/dify/chart/README.md';
  const runbook = await renderMonitoring({ monitoring: { prometheusRule: { runbookBaseUrl } } });
  for (const a of alertsOf(groupsOf(runbook))) {
    t.equal(a.annotations.runbook_url, `${runbookBaseUrl}#${a.alert.toLowerCase()}`, a.alert);
  }
  t.notOk(
    alerts.some((a) => a.annotations.runbook_url),
    'no runbook_url without a base URL',
  );
});

t.test('chart/README.md lists exactly the alerts the chart renders', async (t) => {
  const alerts = alertsOf(groupsOf(await renderMonitoring()))
    .map((a) => a.alert)
    .sort();
  t.same([...new Set([...readme.matchAll(/^#### (DifyGuard[A-Za-z]+)/gm)].map((m) => m[1]))].sort(), alerts);
});

t.test('the ServiceMonitor scrapes the dify-guard Service on its metrics port, and nothing else', async (t) => {
  const objects = await renderMonitoring();
  const monitor = find(objects, 'ServiceMonitor', guardName);
  const spec = monitor.spec as {
    selector: LabelSelector;
    namespaceSelector: { matchNames: string[] };
    jobLabel?: string;
    endpoints: { port: string; path: string; scheme: string }[];
  };
  const services = ofKind(objects, 'Service');
  t.same(
    services.filter((s) => selects(spec.selector, labelsOf(s))).map(nameOf),
    [guardName],
    'selects only the dify-guard Service',
  );
  t.same(spec.namespaceSelector.matchNames, [namespace]);
  t.equal(spec.jobLabel, undefined, 'job = the Service name, as the alert rules expect');
  t.equal(spec.endpoints.length, 1);
  const endpoint = spec.endpoints[0]!;
  t.equal(endpoint.path, '/metrics');
  t.equal(endpoint.scheme, 'http');
  const port = (
    (find(objects, 'Service', guardName).spec as Json).ports as { name: string; port: number; targetPort: string }[]
  ).find((p) => p.name === endpoint.port);
  t.equal(port?.port, contract.webhook.healthPort, `Service port ${endpoint.port} is the health/metrics port`);
  const containerPorts = containersOf(find(objects, 'Deployment', guardName)).flatMap(
    (c) => (c.ports ?? []) as { name: string; containerPort: number }[],
  );
  const target = containerPorts.find((p) => p.name === port?.targetPort);
  t.equal(target?.containerPort, contract.webhook.healthPort, 'and reaches the container there');
  t.same(labelsOf(monitor), { ...labelsOf(find(objects, 'Service', guardName)) }, 'labelled as dify-guard');
  const labelled = await renderMonitoring({
    monitoring: { serviceMonitor: { labels: { release: 'kube-prometheus-stack' } } },
  });
  t.equal(labelsOf(find(labelled, 'ServiceMonitor', guardName)).release, 'kube-prometheus-stack', 'extra labels');
});

t.test('the Grafana dashboard parses and queries only metrics that dify-guard exports', async (t) => {
  const objects = await renderMonitoring({
    monitoring: { grafanaDashboard: { annotations: { grafana_folder: 'Dify' } } },
  });
  const configMap = find(objects, 'ConfigMap', `${guardName}-dashboard`);
  t.equal(labelsOf(configMap).grafana_dashboard, '1', 'the sidecar label');
  t.equal(((configMap.metadata as Json).annotations as Record<string, string>).grafana_folder, 'Dify');
  const dashboard = JSON.parse(String((configMap.data as Json)['dify-guard.json'])) as {
    panels: { title: string; targets: { expr: string }[] }[];
    templating: { list: { query: unknown }[] };
  };
  const exprs = dashboard.panels.flatMap((p) => p.targets.map((x) => x.expr));
  const variableQueries = dashboard.templating.list.map((v) =>
    typeof v.query === 'string' ? v.query : JSON.stringify(v.query),
  );
  const queried = new Set([...exprs, ...variableQueries].flatMap(metricsIn));
  t.ok(queried.size > 0);
  for (const series of queried) t.ok(metricOf(series), `${series} is exported by dify-guard (src/metrics.ts)`);
  const read = new Set([...queried].map((s) => metricOf(s)));
  const panels = [
    'requests',
    'requestDuration',
    'denials',
    'pvcCacheSynced',
    'pvcCacheAge',
    'eventEmissionFailures',
    'certificateReloads',
    'auditedAllowed',
    'templateFindings',
  ] as const;
  for (const key of panels) {
    t.ok(read.has(METRIC_NAMES[key]), `a panel reads ${METRIC_NAMES[key]}`);
  }
  t.ok(
    exprs.some((e) => e.includes('histogram_quantile(0.99') && e.includes(`${METRIC_NAMES.requestDuration}_bucket`)),
    'latency p99',
  );
  t.ok(
    exprs.some((e) => /by \([^)]*decision/.test(e) && e.includes(METRIC_NAMES.requests)),
    'requests by decision',
  );
});

t.test("monitoring without this release's in-cluster dify-guard is refused with the reason", async (t) => {
  for (const webhook of [{ enabled: false }, { url: 'https://10.0.0.5:8443', caBundle: 'Q0E=' }]) {
    const r = await template(deepMerge(withRequired(ALL_ON), { webhook }), { release, namespace });
    t.not(r.status, 0, JSON.stringify(webhook));
    t.match(
      r.stderr,
      /monitoring\.serviceMonitor \/ prometheusRule \/ grafanaDashboard watch the dify-guard that this release runs/,
    );
  }
});

t.test('the schema refuses typos and malformed durations under monitoring', async (t) => {
  for (const [values, pattern] of [
    [{ monitoring: { serviceMonitor: { enable: true } } }, /additional properties 'enable' not allowed/],
    [
      { monitoring: { prometheusRule: { alerts: { unavailable: { for: '5 minutes' } } } } },
      /\/prometheusRule\/alerts\/unavailable\/for/,
    ],
    [
      { monitoring: { prometheusRule: { alerts: { secretChangesDenied: { threshold: -1 } } } } },
      /secretChangesDenied\/threshold/,
    ],
    [
      { monitoring: { prometheusRule: { seriesSelector: '{job="x"}' } } },
      /\/monitoring\/prometheusRule\/seriesSelector/,
    ],
  ] as const) {
    const r = await template(withRequired(values as Json), { release, namespace });
    t.not(r.status, 0, JSON.stringify(values));
    t.match(r.stderr, pattern, JSON.stringify(values));
  }
});

t.test('helm lint --strict is clean with every monitoring object on', async (t) => {
  const r = await helm(['lint', chartDir, '--strict', '-f', valuesFile(withRequired(ALL_ON))]);
  t.equal(r.status, 0, r.stdout + r.stderr);
  t.notMatch(r.stdout, /\[(WARNING|ERROR)\]/);
});
