// dify-guard's simulated pods served by real dify-guard processes: what a kubelet would do for the
// chart's dify-guard Deployment, done openly. For each pod that kwok reports Running (with an address
// from the cluster's local pod range), one real process starts, bound to the pod's address, with the
// pod's own container environment, the certificate of the Secret its `tls` volume names, and the
// identity of the pod's ServiceAccount (so the chart's RBAC is what authorises it). Once its /readyz
// answers, the pod is marked Ready (kwok leaves such pods unready: cluster.ts `servedPods`); when the
// pod is deleted, the process gets SIGTERM, as a kubelet stops a container.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SETTINGS } from '../../src/config.js';
import { contract } from '../../src/contract.js';
import { repoRoot } from '../binaries.js';
import { PATCH, paths, type Json } from '../kube-rest.js';
import { ManagedProcess, type TeardownHost } from '../processes.js';
import { PodPoller, startCluster, type Cluster } from './cluster.js';
import { guardArgs, guardBaseEnv } from './dify-guard.js';

/** The label kwok leaves unready and this harness serves: dify-guard's pods (the chart's selector label). */
export const GUARD_POD_LABEL = { label: contract.labels.name, value: contract.values.guardName } as const;

export interface ServedPod {
  namespace: string;
  name: string;
  ip: string;
  /** Set once the pod's environment is read. */
  process?: ManagedProcess;
  ready: boolean;
  stopped: boolean;
}

const meta = (obj: Json): Json => obj.metadata as Json;
const str = (v: unknown): string => String(v ?? '');

/** Problems: a process that exited, a failed listing of the pods. */
export class GuardPods extends PodPoller {
  /** Every pod served so far (also the stopped ones), in start order. */
  readonly served: ServedPod[] = [];
  private readonly byUid = new Map<string, ServedPod>();
  /** Processes still shutting down, by address: kwok hands a deleted pod's address to the next pod at once. */
  private readonly leaving = new Map<string, Promise<void>>();

  /** `envOverrides`: what this machine maps differently from a cluster (e.g. no cluster DNS for Service names). */
  constructor(
    cluster: Cluster,
    private readonly namespace: string,
    private readonly envOverrides: NodeJS.ProcessEnv = {},
  ) {
    super(cluster, 200, 'listing dify-guard pods');
  }

  protected async pass(): Promise<void> {
    const selector = `${GUARD_POD_LABEL.label}=${GUARD_POD_LABEL.value}`;
    const list = await this.cluster.rest.ok('GET', paths.pods(this.namespace), {
      query: { labelSelector: selector },
    });
    const pods = list.items as Json[];
    const live = new Set(pods.filter((p) => !meta(p).deletionTimestamp).map((p) => str(meta(p).uid)));
    for (const [uid, served] of this.byUid) if (!live.has(uid)) this.stopPod(uid, served);
    for (const pod of pods) if (this.wanted(pod)) this.startPod(pod);
    for (const pod of pods) await this.reassertReady(pod);
  }

  /** A ready process whose pod was marked unready (e.g. by the node lifecycle controller) is marked Ready again, as a probe would. */
  private async reassertReady(pod: Json): Promise<void> {
    const served = this.byUid.get(str(meta(pod).uid));
    const ready = (((pod.status as Json | undefined)?.conditions as Json[] | undefined) ?? []).find(
      (c) => c.type === 'Ready',
    );
    if (served?.ready && !served.stopped && ready?.status !== 'True') await this.markReady(pod);
  }

  private wanted(pod: Json): boolean {
    const status = (pod.status as Json | undefined) ?? {};
    return (
      !meta(pod).deletionTimestamp &&
      status.phase === 'Running' &&
      !!status.podIP &&
      !this.byUid.has(str(meta(pod).uid))
    );
  }

  private stopPod(uid: string, served: ServedPod): void {
    this.byUid.delete(uid);
    served.stopped = true;
    const exit = (served.process?.stop(30_000) ?? Promise.resolve()).finally(() => {
      if (this.leaving.get(served.ip) === exit) this.leaving.delete(served.ip);
    });
    this.leaving.set(served.ip, exit);
  }

  private startPod(pod: Json): void {
    const name = str(meta(pod).name);
    const ip = str((pod.status as Json).podIP);
    const served: ServedPod = { namespace: this.namespace, name, ip, ready: false, stopped: false };
    this.byUid.set(str(meta(pod).uid), served);
    this.served.push(served);
    // A pod deleted while its process was still starting stops it on purpose: not a failure.
    void this.run(pod, served).catch((err: Error) => {
      if (!served.stopped) this.errors.push(`pod ${name}: ${err.message}\n${served.process?.tail(20) ?? ''}`);
    });
  }

  private async run(pod: Json, served: ServedPod): Promise<void> {
    const env = await this.podEnv(pod, served);
    // A CNI frees an address only once the old pod's sandbox is gone; kwok does not wait, so this does.
    await this.leaving.get(served.ip);
    if (served.stopped) return;
    const process = new ManagedProcess({
      name: `dify-guard-pod-${served.name}`,
      dir: this.cluster.cp.dir,
      cwd: repoRoot,
      command: globalThis.process.execPath,
      args: guardArgs(),
      env,
    });
    served.process = process;
    const health = `http://${served.ip}:${env[SETTINGS.healthPort.env]}/readyz`;
    await process.startUntilReady(
      `${served.name} ${health}`,
      async () =>
        (await fetch(health)
          .then((r) => r.status)
          .catch(() => 0)) === 200,
      { timeoutMs: 60_000, intervalMs: 150 },
    );
    if (served.stopped) return;
    await this.markReady(pod);
    served.ready = true;
  }

  /** The container's own env, with the TLS files written from the mounted Secret and the pod's address to bind. */
  private async podEnv(pod: Json, served: ServedPod): Promise<NodeJS.ProcessEnv> {
    const spec = pod.spec as Json;
    const container = (spec.containers as Json[])[0] as Json;
    const env: NodeJS.ProcessEnv = guardBaseEnv();
    for (const e of (container.env as Json[] | undefined) ?? []) env[str(e.name)] = str(e.value);
    const volume = ((spec.volumes as Json[]).find((v) => v.name === 'tls') as Json).secret as Json;
    const secret = await this.cluster.rest.ok('GET', paths.secret(this.namespace, str(volume.secretName)));
    const dir = join(this.cluster.cp.dir, `tls-${served.name}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const key of ['tls.crt', 'tls.key']) {
      writeFileSync(join(dir, key), Buffer.from(str((secret.data as Json)[key]), 'base64'), { mode: 0o600 });
    }
    const sa = str(spec.serviceAccountName);
    const groups = ['system:serviceaccounts', `system:serviceaccounts:${this.namespace}`];
    return {
      ...env,
      KUBECONFIG: this.cluster.cp.kubeconfigFor(`system:serviceaccount:${this.namespace}:${sa}`, groups),
      [SETTINGS.tlsCertFile.env]: join(dir, 'tls.crt'),
      [SETTINGS.tlsKeyFile.env]: join(dir, 'tls.key'),
      [SETTINGS.bindAddress.env]: served.ip,
      ...this.envOverrides,
    };
  }

  /** Ready and ContainersReady True on the pod's status, as a kubelet writes them after a passing readiness probe. */
  private async markReady(pod: Json): Promise<void> {
    const now = new Date().toISOString();
    const conditions = ['Ready', 'ContainersReady'].map((type) => ({ type, status: 'True', lastTransitionTime: now }));
    // The list is replaced, not merged: kept running with its image, as kwok wrote it (kubectl's READY counts running and ready).
    const containerStatuses = ((pod.spec as Json).containers as Json[]).map((c) => ({
      name: c.name,
      image: c.image,
      ready: true,
      started: true,
      restartCount: 0,
      state: { running: { startedAt: now } },
    }));
    await this.cluster.rest.ok('PATCH', `${paths.pod(this.namespace, str(meta(pod).name))}/status`, {
      contentType: PATCH.strategic,
      body: { status: { conditions, containerStatuses } },
    });
  }

  /** Ready processes right now. */
  readyPods(): ServedPod[] {
    return this.served.filter((s) => s.ready && !s.stopped);
  }

  async stop(): Promise<void> {
    await this.stopPolling();
    await Promise.all(
      this.served.map((s) => {
        s.stopped = true;
        return s.process?.stop(30_000);
      }),
    );
  }
}

/** A test file's host: tap's `t` (teardown, and the diagnostics printed when the file fails). */
export interface FileHost extends TeardownHost {
  passing(): boolean;
  comment(...message: unknown[]): void;
}

/**
 * A cluster whose dify-guard pods in `namespace` are served by real processes (servedPods: GUARD_POD_LABEL),
 * both stopped in the file's teardown; a failing file prints the cluster's diagnostics.
 */
export async function startGuardCluster(
  t: FileHost,
  options: { name: string; namespace: string; nodes?: number },
): Promise<{ cluster: Cluster; guards: GuardPods }> {
  const cluster = await startCluster(t, { name: options.name, nodes: options.nodes, servedPods: GUARD_POD_LABEL });
  const guards = new GuardPods(cluster, options.namespace);
  guards.start();
  t.teardown(async () => {
    await guards.stop();
    if (!t.passing()) t.comment(cluster.diagnostics());
  });
  return { cluster, guards };
}
