// The chart as `helm template` renders it, for the webhook configurations and the pod specs the
// tests send through the API server.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { binary, repoRoot } from '../binaries.js';
import { runOk, type CommandResult } from '../commands.js';
import { helmEnv } from '../helm-env.js';
import type { Json } from '../kube-rest.js';
import { deepMerge, find, kindOf, nameOf, parseObjects } from '../manifests.js';
import { testSecret } from '../secrets.js';
import type { ControlPlane } from './harness.js';

export const chartDir = join(repoRoot, 'chart');

/** A random credential for one test run (never printed; the end-of-suite scan finds any that is: harness/secrets.ts). */
export const randomSecret = testSecret;

/** Values every install needs, with the webhook pointed at a dify-guard outside the cluster. */
export function testValues(webhook: { url: string; caBundle: string }, extra: Json = {}): Json {
  return deepMerge(
    {
      secrets: { difySecretKey: randomSecret() },
      postgresql: { auth: { password: randomSecret() } },
      webhook: { url: webhook.url, caBundle: webhook.caBundle },
    },
    extra,
  );
}

/** Writes values to a file in `dir` (so no credential appears on a command line) and returns its path. */
export function writeValues(dir: string, name: string, values: Json): string {
  const file = join(dir, `${name}.values.json`);
  writeFileSync(file, JSON.stringify(values), { mode: 0o600 });
  return file;
}

/** What every helm command about the chart names: the release, the chart, its namespace and its values file. */
export interface ChartTarget {
  release: string;
  namespace: string;
  valuesFile: string;
}

export interface RenderOptions extends ChartTarget {
  /** Folder for helm's own cache/config (the control plane's folder). */
  home: string;
  extraArgs?: string[];
}

/** helm's arguments for `verb` (e.g. `['upgrade', '--install']`) of the chart as `target`, then `extra`. */
export function chartArgs(verb: string[], target: ChartTarget, extra: string[] = []): string[] {
  return [...verb, target.release, chartDir, '--namespace', target.namespace, '-f', target.valuesFile, ...extra];
}

/** `helm template` of the whole chart, as parsed objects (empty documents dropped). */
export async function renderChart(options: RenderOptions): Promise<Json[]> {
  const r = await runOk(binary('helm'), chartArgs(['template'], options, options.extraArgs ?? []), {
    env: helmEnv(options.home),
  });
  return parseObjects(r.stdout);
}

export { deepMerge, kindOf, nameOf, find as findObject };

/** A Pod as the controller of a Deployment/StatefulSet/Job would create it from its template. */
export function podFromTemplate(workload: Json, namespace: string): Json {
  const spec = workload.spec as Json;
  const template = (spec.jobTemplate ? ((spec.jobTemplate as Json).spec as Json).template : spec.template) as Json;
  const metadata = structuredClone((template.metadata ?? {}) as Json);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { ...metadata, generateName: `${nameOf(workload)}-`, namespace },
    spec: structuredClone(template.spec as Json),
  };
}

/**
 * `helm upgrade --install` of the chart with these values into `namespace` (created), waiting up to
 * 5 minutes for every workload to be ready, as the guide's install does.
 */
export function installChartAndWait(cp: ControlPlane, target: ChartTarget): Promise<CommandResult> {
  return cp.helm(chartArgs(['upgrade', '--install'], target, ['--create-namespace', '--wait', '--timeout', '5m']), {
    timeoutMs: 330_000,
  });
}
