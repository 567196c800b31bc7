// The chart as the real helm binary renders it: `helm template` / `helm lint` with values written to a
// private file (never on a command line), parsed objects, and the accessors the chart tests share.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { binary, repoRoot } from './binaries.js';
import { run, type CommandResult } from './commands.js';
import { helmEnv } from './helm-env.js';
import { deepMerge, find, isObject, kindOf, labelsOf, nameOf, parseObjects, type Json } from './manifests.js';
import { testSecret } from './secrets.js';

export { deepMerge, find, isObject, kindOf, labelsOf, nameOf, parseObjects, testSecret, type Json };

export const chartDir = join(repoRoot, 'chart');

/** The two values the chart requires, with fresh random secrets. */
export function requiredValues(): { postgresql: { auth: { password: string } }; secrets: { difySecretKey: string } } {
  return { postgresql: { auth: { password: testSecret() } }, secrets: { difySecretKey: testSecret() } };
}

export interface HelmOptions {
  release?: string;
  namespace?: string;
  /** Extra helm arguments, e.g. ['--show-only', 'templates/x.yaml']. */
  args?: string[];
  chart?: string;
}

/** A private folder for one test file: helm's own cache/config and values files live there. */
const home = mkdtempSync(join(tmpdir(), 'dify-chart-test-'));
process.once('exit', () => rmSync(home, { recursive: true, force: true }));
let valuesCount = 0;

// No cluster: helm must never reach one from these tests.
const noClusterEnv = (): NodeJS.ProcessEnv => helmEnv(home, { KUBECONFIG: join(home, 'no-kubeconfig') });

export function valuesFile(values: Json): string {
  const file = join(home, `values-${++valuesCount}.json`);
  writeFileSync(file, JSON.stringify(values), { mode: 0o600 });
  return file;
}

export function helm(args: string[]): Promise<CommandResult> {
  return run(binary('helm'), args, { env: noClusterEnv(), timeoutMs: 60_000 });
}

/** `helm template`, whatever its outcome (for the failure tests). */
export function template(values: Json, options: HelmOptions = {}): Promise<CommandResult> {
  return helm([
    'template',
    options.release ?? 'dify',
    options.chart ?? chartDir,
    '--namespace',
    options.namespace ?? 'dify',
    '-f',
    valuesFile(values),
    ...(options.args ?? []),
  ]);
}

/** `helm template` that must succeed: the rendered objects and the raw text. */
export async function render(values: Json, options: HelmOptions = {}): Promise<{ objects: Json[]; text: string }> {
  const r = await template(values, options);
  if (r.status !== 0) throw new Error(`helm template failed (${r.status}):\n${r.stderr}`);
  return { objects: parseObjects(r.stdout), text: r.stdout };
}

// ---- accessors ----

export const annotationsOf = (o: Json): Record<string, string> =>
  ((o.metadata as Json | undefined)?.annotations ?? {}) as Record<string, string>;

export const ofKind = (objects: Json[], kind: string): Json[] => objects.filter((o) => kindOf(o) === kind);

export const WORKLOAD_KINDS = ['Deployment', 'StatefulSet', 'Job', 'DaemonSet'];
export const workloads = (objects: Json[]): Json[] => objects.filter((o) => WORKLOAD_KINDS.includes(kindOf(o)));

export interface PodTemplate {
  metadata: Json & { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: Json;
}
export const podTemplateOf = (workload: Json): PodTemplate => (workload.spec as Json).template as PodTemplate;

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } } & Json;
}
export interface Container extends Json {
  name: string;
  env?: EnvVar[];
  image: string;
}

export const containersOf = (workload: Json): Container[] =>
  (podTemplateOf(workload).spec.containers ?? []) as Container[];
export const initContainersOf = (workload: Json): Container[] =>
  (podTemplateOf(workload).spec.initContainers ?? []) as Container[];
export const allContainersOf = (workload: Json): Container[] => [
  ...initContainersOf(workload),
  ...containersOf(workload),
];

export const envOf = (c: Container, name: string): EnvVar | undefined => (c.env ?? []).find((e) => e.name === name);
export const envIndex = (c: Container, name: string): number => (c.env ?? []).findIndex((e) => e.name === name);

/** The workload whose pod template carries this component label. */
export function workloadOf(objects: Json[], componentLabelKey: string, component: string): Json {
  const found = workloads(objects).filter((w) => podTemplateOf(w).metadata.labels?.[componentLabelKey] === component);
  if (found.length !== 1) throw new Error(`expected one workload of component ${component}, found ${found.length}`);
  return found[0]!;
}

// ---- label selectors, evaluated the way the API server does ----

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }[];
}

/** Whether one matchExpressions entry holds for `labels`. */
function expressionHolds(e: NonNullable<LabelSelector['matchExpressions']>[number], labels: Record<string, string>) {
  const has = Object.hasOwn(labels, e.key);
  const listed = has && (e.values ?? []).includes(labels[e.key]!);
  switch (e.operator) {
    case 'In':
      return listed;
    case 'NotIn':
      return !listed;
    case 'Exists':
      return has;
    case 'DoesNotExist':
      return !has;
    default:
      throw new Error(`unknown selector operator ${String(e.operator)}`);
  }
}

export function selects(selector: LabelSelector | undefined, labels: Record<string, string>): boolean {
  if (!selector) return true;
  const matched = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  return matched && (selector.matchExpressions ?? []).every((e) => expressionHolds(e, labels));
}
