// What the missing kube-controller-manager would do, done openly by the tests and the demo: a
// Job's pod created from its template (through the admission webhooks like any pod), the Job's
// status written as the Job controller writes it after a successful pod, and a StatefulSet's PVC
// created from its volumeClaimTemplate.
import { waitFor, type CommandResult } from '../commands.js';
import { paths, type Json, type KubeRest } from '../kube-rest.js';
import { podFromTemplate } from './chart.js';

export const jobPath = (namespace: string, name: string): string =>
  `/apis/batch/v1/namespaces/${namespace}/jobs/${name}`;

/** Writes the status the Job controller writes once the Job's one pod has succeeded. */
export async function completeJob(rest: KubeRest, job: Json): Promise<void> {
  const metadata = job.metadata as Json;
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const condition = (type: string): Json => ({
    type,
    status: 'True',
    reason: 'CompletionsReached',
    message: 'Reached expected number of succeeded pods',
    lastProbeTime: now,
    lastTransitionTime: now,
  });
  const status = {
    startTime: now,
    completionTime: now,
    succeeded: 1,
    active: 0,
    ready: 0,
    terminating: 0,
    uncountedTerminatedPods: {},
    conditions: [condition('SuccessCriteriaMet'), condition('Complete')],
  };
  await rest.ok('PUT', `${jobPath(String(metadata.namespace), String(metadata.name))}/status`, {
    body: { ...job, status },
  });
}

export interface HookRun {
  result: CommandResult;
  job: Json;
  /** The pod created from the Job's template, as stored (after the webhooks). */
  pod: Json;
}

/**
 * Runs a helm install/upgrade whose post-install/post-upgrade hook is `namespace/jobName`: waits for
 * helm to create the (new) Job, creates its pod and marks the Job complete, then waits for helm.
 */
export async function runWithHookJob(
  rest: KubeRest,
  namespace: string,
  jobName: string,
  helm: () => Promise<CommandResult>,
): Promise<HookRun> {
  const path = jobPath(namespace, jobName);
  const previousUid = ((await rest.request('GET', path)).body.metadata as Json | undefined)?.uid;
  const running = helm();
  let finished: CommandResult | undefined;
  void running.then((r) => {
    finished = r;
  });
  const job = await waitFor(
    'helm to create the hook Job',
    async () => {
      if (finished) throw new Error(`helm ended before creating the hook Job:\n${finished.stderr}\n${finished.stdout}`);
      const res = await rest.request('GET', path);
      return res.status === 200 && (res.body.metadata as Json).uid !== previousUid ? res.body : undefined;
    },
    { timeoutMs: 180_000, intervalMs: 250 },
  );
  const pod = await rest.ok('POST', paths.pods(namespace), { body: podFromTemplate(job, namespace) });
  await completeJob(rest, job);
  return { result: await running, job, pod };
}

/** Creates the PVC of a StatefulSet's pod `ordinal` from its first volumeClaimTemplate; returns its name. */
export async function createStatefulSetPvc(rest: KubeRest, statefulSet: Json, ordinal = 0): Promise<string> {
  const metadata = statefulSet.metadata as Json;
  const spec = statefulSet.spec as Json;
  const template = structuredClone(((spec.volumeClaimTemplates as Json[]) ?? [])[0]);
  if (!template) throw new Error(`StatefulSet ${String(metadata.name)} has no volumeClaimTemplates`);
  const name = `${String((template.metadata as Json).name)}-${String(metadata.name)}-${ordinal}`;
  const namespace = String(metadata.namespace);
  await rest.ok('POST', paths.pvcs(namespace), {
    body: {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: {
        ...(template.metadata as Json),
        name,
        namespace,
        labels: (spec.selector as Json).matchLabels as Json,
      },
      spec: template.spec,
    },
  });
  return name;
}
