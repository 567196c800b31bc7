// A cluster on one machine: the control plane of harness.ts plus the real kube-controller-manager
// and kube-scheduler, and kwok for the nodes. kwok simulates only the kubelets: fake Nodes whose
// pods it moves through the stages of kwok's own release (Running and Ready; a Job's pod Succeeded;
// deleted when asked). Everything else (scheduling, Deployments, StatefulSets and their PVCs, Jobs,
// PDBs, garbage collection, service accounts) is done by the real controllers. One per test file.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'node:https';
import { binary } from '../binaries.js';
import { waitFor } from '../commands.js';
import type { Json, KubeRest } from '../kube-rest.js';
import { reservePorts, type ReservedPort } from '../ports.js';
import { ManagedProcess, type TeardownHost } from '../processes.js';
import { ControlPlane, type ControlPlaneOptions } from './harness.js';
import { reserveLocalPodRange, type LocalPodRange } from './pod-network.js';

/** The annotation kwok is told to manage nodes by (kwok's own convention for fake nodes). */
export const KWOK_NODE_ANNOTATION = { key: 'kwok.x-k8s.io/node', value: 'fake' } as const;
/** The default StorageClass: the controller manager's host-path provisioner makes and binds the PVs. */
export const STORAGE_CLASS = 'standard';

// Chosen explicitly: no cloud provider, no node IPAM. The node lifecycle controller lifts the
// not-ready taint the API server puts on every new Node once kwok reports it Ready (and keeps its lease).
export const CONTROLLERS = [
  'node-lifecycle-controller',
  'serviceaccount-token-controller',
  'serviceaccount-controller',
  'root-ca-certificate-publisher-controller',
  'namespace-controller',
  'garbage-collector-controller',
  'clusterrole-aggregation-controller',
  'deployment-controller',
  'replicaset-controller',
  'statefulset-controller',
  'job-controller',
  'cronjob-controller',
  'ttl-after-finished-controller',
  'disruption-controller',
  'pod-garbage-collector-controller',
  'endpoints-controller',
  'endpointslice-controller',
  'endpointslice-mirroring-controller',
  'persistentvolume-binder-controller',
  'persistentvolumeclaim-protection-controller',
  'persistentvolume-protection-controller',
] as const;

/**
 * What `kubectl logs` prints for every container not given a log of its own (`logs`): kwok serves it from a
 * file, as a kubelet serves a container's log.
 */
export const SIMULATED_CONTAINER_LOG =
  "[kwok] simulated container: its status comes from kwok's stages; no image was pulled and no command ran";

/**
 * kwok's configuration besides its stages: one ClusterLogs for every container without a log of its own,
 * read from `logFile` (CRI log format, as a kubelet keeps it). JSON is YAML, which kwok's --config reads.
 */
export function kwokLogsConfig(logFile: string): string {
  return JSON.stringify({
    apiVersion: 'kwok.x-k8s.io/v1alpha1',
    kind: 'ClusterLogs',
    metadata: { name: 'simulated-containers' },
    spec: { logs: [{ logsFile: logFile }] },
  });
}

/**
 * `kubectl exec` into one pod (or, without `pod`, into the listed containers of any pod of the namespace)
 * runs the command on this machine instead (kwok's ClusterExec, local target), in `workDir` with kwok's
 * environment plus `env`: for pods that stand for a local program (e.g. psql against the real PostgreSQL).
 * Only the pods (or containers) listed here can be exec'ed into.
 */
export interface SimulatedExec {
  namespace: string;
  pod?: string;
  containers?: string[];
  workDir?: string;
  env?: Record<string, string>;
}

export function kwokExecConfig(exec: SimulatedExec, index: number): string {
  const envs = Object.entries(exec.env ?? {}).map(([name, value]) => ({ name, value }));
  const local = { ...(exec.workDir ? { workDir: exec.workDir } : {}), envs };
  return JSON.stringify({
    apiVersion: 'kwok.x-k8s.io/v1alpha1',
    kind: 'ClusterExec',
    metadata: { name: `local-${index}` },
    spec: {
      selector: { matchNamespaces: [exec.namespace], ...(exec.pod ? { matchNames: [exec.pod] } : {}) },
      execs: [{ ...(exec.containers ? { containers: exec.containers } : {}), local }],
    },
  });
}

/**
 * `kubectl logs` of these containers, in any pod of the namespace, prints the file
 * `Cluster.containerLogFile(namespace, container)` (CRI log format) instead of SIMULATED_CONTAINER_LOG:
 * `text` when given, else whatever the harness writes there (e.g. the output of an init container's
 * command run on this machine: init-containers.ts).
 */
export interface SimulatedLogs {
  namespace: string;
  containers: string[];
  text?: string;
}

/** A ClusterLogs for one namespace's containers; listed before the catch-all one, which kwok would pick first. */
export function kwokContainerLogsConfig(logs: SimulatedLogs, file: (container: string) => string): string {
  return JSON.stringify({
    apiVersion: 'kwok.x-k8s.io/v1alpha1',
    kind: 'ClusterLogs',
    metadata: { name: `containers-${logs.namespace}-${logs.containers.join('-')}` },
    spec: {
      selector: { matchNamespaces: [logs.namespace] },
      logs: logs.containers.map((c) => ({ containers: [c], logsFile: file(c) })),
    },
  });
}

/**
 * Containers that cannot run here (their image is never pulled): `kubectl exec` of one of
 * NOT_RUNNING_COMMANDS in them prints `message` on stderr and exits 1, instead of kwok's
 * `no exec found`. kwok finds a command on its own PATH, so a folder of shims comes first there;
 * elsewhere the shims run the real program.
 */
export interface NotRunningContainers {
  namespace: string;
  containers: string[];
  message: string;
}

/** The commands the guide types into containers that do not run here (the plugin daemon's health check). */
export const NOT_RUNNING_COMMANDS = ['curl'] as const;
const NOT_RUNNING_ENV = 'DIFY_GUARD_CONTAINER_NOT_RUNNING';

/** The shim for `command`: the message of the container it is exec'ed in, or the real program on the rest of PATH. */
export function notRunningShim(command: string, shimDir: string): string {
  return [
    '#!/bin/sh',
    `# kwok runs \`kubectl exec\` commands on this machine, found on its PATH, where ${shimDir} comes first.`,
    `if [ -n "\${${NOT_RUNNING_ENV}:-}" ]; then printf '%s\\n' "$${NOT_RUNNING_ENV}" >&2; exit 1; fi`,
    `PATH=\${PATH#"${shimDir}:"}`,
    `exec ${command} "$@"`,
    '',
  ].join('\n');
}

export const notRunningExec = (c: NotRunningContainers): SimulatedExec => ({
  namespace: c.namespace,
  containers: c.containers,
  env: { [NOT_RUNNING_ENV]: c.message },
});

/** One line in the CRI log format kwok reads (`<RFC 3339 time> stdout F <text>`). */
export const criLogLine = (text: string, at = new Date()): string => `${at.toISOString()} stdout F ${text}\n`;

export interface ClusterOptions extends ControlPlaneOptions {
  /** Number of fake nodes (default 2). */
  nodes?: number;
  /** Where kwok takes pod addresses from (default 10.244.0.0/16, apart from the Service range 10.0.0.0/24). */
  podCidr?: string;
  /** Pods whose `kubectl exec` runs locally (none by default). */
  execs?: SimulatedExec[];
  /** Containers whose `kubectl logs` prints a file of their own (none by default). */
  logs?: SimulatedLogs[];
  /** Containers that cannot run here, whose `kubectl exec` of the guide's commands says so (none by default). */
  notRunning?: NotRunningContainers[];
  /**
   * Pods served by real local processes (guard-pods.ts): pod addresses come from a /24 routed to this
   * machine (pod-network.ts, overrides podCidr), and pods with this label start Running but not Ready;
   * the harness marks them Ready once their process answers its readiness probe, as a kubelet would.
   */
  servedPods?: { label: string; value: string };
}

/**
 * kwok's stages, with pod-ready split in two: pods with the served label get Running with Ready and
 * ContainersReady False (their readiness comes from a real process), every other pod as before.
 */
export function servedPodStages(stages: string, served: { label: string; value: string }): string {
  const docs = stages.split('\n---\n');
  const i = docs.findIndex((d) => /\n {2}name: pod-ready\n/.test(d));
  if (i < 0) throw new Error("kwok-stages.yaml has no pod-ready stage: the stages of kwok's release changed");
  const original = docs[i] as string;
  const expression = (operator: string): string =>
    `    matchExpressions:\n    - key: '.metadata.labels["${served.label}"]'\n` +
    `      operator: '${operator}'\n      values:\n      - '${served.value}'\n`;
  const others = original.replace('    matchExpressions:\n', expression('NotIn'));
  const unready = original
    .replace('  name: pod-ready\n', '  name: pod-ready-served\n')
    .replace('    matchExpressions:\n', expression('In'))
    .replace(/status: "True"\n(\s+)type: (Ready|ContainersReady)\n/g, 'status: "False"\n$1type: $2\n')
    .replace('ready: true', 'ready: false');
  if (others === original || !unready.includes('status: "False"'))
    throw new Error("kwok's pod-ready stage has an unexpected shape");
  return [...docs.slice(0, i), others, unready, ...docs.slice(i + 1)].join('\n---\n');
}

/** GET over HTTPS, verified against `ca`: the components serve their health on the control plane's certificate. */
function healthz(url: string, ca: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', ca, timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

export function fakeNode(name: string): Json {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      annotations: { [KWOK_NODE_ANNOTATION.key]: KWOK_NODE_ANNOTATION.value },
      labels: {
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        type: 'kwok',
      },
    },
    spec: {},
  };
}

export function defaultStorageClass(): Json {
  return {
    apiVersion: 'storage.k8s.io/v1',
    kind: 'StorageClass',
    metadata: { name: STORAGE_CLASS, annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } },
    provisioner: 'kubernetes.io/host-path',
    reclaimPolicy: 'Delete',
    volumeBindingMode: 'Immediate',
  };
}

/** Ready (kwok's status) and without the not-ready taint (lifted by the node lifecycle controller). */
const schedulable = (node: Json): boolean =>
  (((node.status as Json | undefined)?.conditions as Json[] | undefined) ?? []).some(
    (c) => c.type === 'Ready' && c.status === 'True',
  ) && (((node.spec as Json | undefined)?.taints as Json[] | undefined) ?? []).length === 0;

export class Cluster {
  readonly controllerManager: ManagedProcess;
  readonly scheduler: ManagedProcess;
  readonly kwok: ManagedProcess;
  readonly nodeNames: string[];
  readonly rest: KubeRest;
  private readonly ports: ReservedPort[];
  /** The pod range routed to this machine (with `servedPods`). */
  readonly podRange: LocalPodRange | undefined;
  private readonly urls: { controllerManager: string; scheduler: string; kwok: string };
  private stopped = false;

  private constructor(
    readonly cp: ControlPlane,
    ports: ReservedPort[],
    options: ClusterOptions,
  ) {
    this.ports = ports;
    this.rest = cp.rest();
    const [kcmPort, schedulerPort, kwokPort] = ports.map((p) => p.port) as [number, number, number];
    this.urls = {
      controllerManager: `https://127.0.0.1:${kcmPort}/healthz`,
      scheduler: `https://127.0.0.1:${schedulerPort}/healthz`,
      kwok: `https://127.0.0.1:${kwokPort}/healthz`,
    };
    this.nodeNames = Array.from({ length: options.nodes ?? 2 }, (_, i) => `kwok-node-${i}`);
    const tls = [`--tls-cert-file=${cp.pki.serving.certFile}`, `--tls-private-key-file=${cp.pki.serving.keyFile}`];
    this.podRange = options.servedPods ? reserveLocalPodRange() : undefined;
    const stagesFile = this.stagesFile(options);
    const logsConfig = this.debuggingConfig(options);
    this.controllerManager = controllerManagerProcess(cp, kcmPort, tls);
    this.scheduler = componentProcess(cp, 'kube-scheduler', schedulerPort, tls);
    this.kwok = new ManagedProcess({
      name: 'kwok',
      dir: cp.dir,
      command: binary('kwok'),
      // HOME: kwok also reads ~/.kwok/kwok.yaml; the caller's must not change what is simulated.
      env: { ...process.env, HOME: cp.dir, PATH: this.execPath(options) },
      args: [
        `--kubeconfig=${cp.kubeconfigPath}`,
        `--config=${stagesFile}`,
        `--config=${logsConfig}`,
        '--manage-all-nodes=false',
        `--manage-nodes-with-annotation-selector=${KWOK_NODE_ANNOTATION.key}=${KWOK_NODE_ANNOTATION.value}`,
        `--cidr=${this.podRange?.cidr ?? options.podCidr ?? '10.244.0.0/16'}`,
        '--node-ip=127.0.0.1',
        `--node-port=${kwokPort}`,
        `--server-address=127.0.0.1:${kwokPort}`,
        ...tls,
      ],
    });
  }

  /** kwok's stages: those of its release, with pod-ready split in two with `servedPods`. */
  private stagesFile(options: ClusterOptions): string {
    if (!options.servedPods) return binary('kwok-stages.yaml');
    const file = join(this.cp.dir, 'kwok-stages.yaml');
    writeFileSync(file, servedPodStages(readFileSync(binary('kwok-stages.yaml'), 'utf8'), options.servedPods));
    return file;
  }

  /** kwok's logs and execs (`kwok-debugging.yaml`), with the log files they name. */
  private debuggingConfig(options: ClusterOptions): string {
    const file = join(this.cp.dir, 'kwok-debugging.yaml');
    writeFileSync(join(this.cp.dir, 'simulated-container.cri'), criLogLine(SIMULATED_CONTAINER_LOG));
    for (const l of options.logs ?? [])
      for (const c of l.containers)
        writeFileSync(this.containerLogFile(l.namespace, c), l.text ? criLogLine(l.text) : '');
    const documents = [
      ...(options.logs ?? []).map((l) => kwokContainerLogsConfig(l, (c) => this.containerLogFile(l.namespace, c))),
      kwokLogsConfig(join(this.cp.dir, 'simulated-container.cri')),
      ...[...(options.execs ?? []), ...(options.notRunning ?? []).map(notRunningExec)].map(kwokExecConfig),
    ];
    writeFileSync(file, documents.join('\n---\n'));
    return file;
  }

  /** The file `kubectl logs -c <container>` prints for that container of a pod of `namespace` (option `logs`). */
  containerLogFile(namespace: string, container: string): string {
    return join(this.cp.dir, `container-${namespace}-${container}.cri`);
  }

  /** kwok's PATH: with `notRunning`, the folder of the shims comes first. */
  private execPath(options: ClusterOptions): string {
    const path = process.env.PATH ?? '/usr/bin:/bin';
    if (!options.notRunning?.length) return path;
    const dir = join(this.cp.dir, 'not-running-commands');
    mkdirSync(dir, { mode: 0o755 });
    for (const command of NOT_RUNNING_COMMANDS)
      writeFileSync(join(dir, command), notRunningShim(command, dir), { mode: 0o755 });
    return `${dir}:${path}`;
  }

  /** Starts a control plane, then the controller manager, the scheduler and kwok, and waits until nodes are Ready. */
  static async start(options: ClusterOptions = {}): Promise<Cluster> {
    const cp = await ControlPlane.start({
      name: 'cluster',
      ...options,
      serviceAccountAdmission: true,
      // `kubectl logs`/`exec` go from the API server to the node's InternalIP (kwok's server), TLS verified.
      // Webhook Services are called on their endpoints' pod addresses: no kube-proxy gives ClusterIPs a route here.
      apiServerArgs: (pki) => [
        '--kubelet-preferred-address-types=InternalIP',
        `--kubelet-certificate-authority=${pki.serving.caFile}`,
        '--enable-aggregator-routing=true',
      ],
    });
    let cluster: Cluster | undefined;
    try {
      cluster = new Cluster(cp, await reservePorts(3), options);
      await cluster.startComponents();
      await cluster.setUp();
      return cluster;
    } catch (err) {
      if (cluster) await cluster.stop();
      else await cp.stop();
      throw err;
    }
  }

  private async startComponents(): Promise<void> {
    const ca = readFileSync(this.cp.pki.serving.caFile);
    const parts = [
      [this.controllerManager, this.urls.controllerManager],
      [this.scheduler, this.urls.scheduler],
      [this.kwok, this.urls.kwok],
    ] as const;
    for (const [process, url] of parts) {
      await process.startUntilReady(`${process.name} ${url}`, async () => (await healthz(url, ca)) === 200, {
        timeoutMs: 60_000,
        intervalMs: 200,
      });
    }
  }

  /** The fake nodes, the default StorageClass, and the default ServiceAccount (proof the controllers run). */
  private async setUp(): Promise<void> {
    for (const name of this.nodeNames) await this.rest.ok('POST', '/api/v1/nodes', { body: fakeNode(name) });
    await this.rest.ok('POST', '/apis/storage.k8s.io/v1/storageclasses', { body: defaultStorageClass() });
    await waitFor(
      'every fake node Ready (kwok) and untainted (node lifecycle controller)',
      async () => {
        const nodes = await Promise.all(this.nodeNames.map((n) => this.rest.ok('GET', `/api/v1/nodes/${n}`)));
        return nodes.every(schedulable) ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
    await waitFor(
      'the ServiceAccount controller to create default/default',
      async () =>
        (await this.rest.get('/api/v1/namespaces/default/serviceaccounts/default')).status === 200 ? true : undefined,
      { timeoutMs: 60_000, intervalMs: 200 },
    );
  }

  /** The last lines of every process's output, for a failing test's report. */
  diagnostics(lines = 30): string {
    const ours = [this.controllerManager, this.scheduler, this.kwok].map(
      (p) => `--- ${p.name} (${p.logPath})\n${p.tail(lines)}`,
    );
    return [this.cp.diagnostics(lines), ...ours].join('\n');
  }

  /** The host-path provisioner makes a folder per PV under /tmp/hostpath_pv (fixed in Kubernetes): removes this cluster's. */
  private async removeVolumeFolders(): Promise<void> {
    const res = await this.rest.get('/api/v1/persistentvolumes').catch(() => undefined);
    for (const pv of (res?.body.items as Json[] | undefined) ?? []) {
      const path = String(((pv.spec as Json).hostPath as Json | undefined)?.path ?? '');
      if (/^\/tmp\/hostpath_pv\/[0-9a-f-]+$/.test(path)) rmSync(path, { recursive: true, force: true });
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.removeVolumeFolders();
    await this.kwok.stop(5_000);
    await this.scheduler.stop(5_000);
    await this.controllerManager.stop(5_000);
    for (const p of this.ports) p.release();
    this.podRange?.release();
    await this.cp.stop();
  }
}

/**
 * A kubelet's work that kwok leaves undone, done by polling the cluster's pods: `pass` runs every
 * `intervalMs`, one pass at a time; what a pass throws is kept, prefixed with `failure`, among the
 * `problems()` a test asserts there were none of.
 */
export abstract class PodPoller {
  private timer: NodeJS.Timeout | undefined;
  /** The pass under way, if any. */
  private ticking: Promise<void> | undefined;
  protected readonly errors: string[] = [];

  constructor(
    protected readonly cluster: Cluster,
    private readonly intervalMs: number,
    private readonly failure: string,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.tick(), this.intervalMs);
  }

  problems(): string[] {
    return [...this.errors];
  }

  /** One look at the pods, and what follows from it. */
  protected abstract pass(): Promise<void>;

  /** No more passes; returns once the one under way has ended. */
  protected async stopPolling(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.ticking;
  }

  private tick(): void {
    this.ticking ??= this.pass()
      .catch((err: Error) => {
        this.errors.push(`${this.failure}: ${err.message}`);
      })
      .finally(() => {
        this.ticking = undefined;
      });
  }
}

/** Starts a cluster for one test file and stops it in the file's teardown. */
export async function startCluster(t: TeardownHost, options: ClusterOptions = {}): Promise<Cluster> {
  const cluster = await Cluster.start(options);
  t.teardown(() => cluster.stop());
  return cluster;
}

/** A real control-plane component: its own kubeconfig user, no leader election, its secure port on loopback. */
function componentProcess(
  cp: ControlPlane,
  name: 'kube-controller-manager' | 'kube-scheduler',
  port: number,
  tls: string[],
  args: string[] = [],
): ManagedProcess {
  return new ManagedProcess({
    name,
    dir: cp.dir,
    command: binary(name),
    args: [
      `--kubeconfig=${cp.kubeconfigFor(`system:${name}`)}`,
      '--leader-elect=false',
      `--secure-port=${port}`,
      '--bind-address=127.0.0.1',
      ...tls,
      ...args,
    ],
  });
}

/** The real kube-controller-manager: the controllers of CONTROLLERS, each as its own service account. */
function controllerManagerProcess(cp: ControlPlane, port: number, tls: string[]): ManagedProcess {
  return componentProcess(cp, 'kube-controller-manager', port, tls, [
    `--controllers=${CONTROLLERS.join(',')}`,
    // Each controller acts as its own service account, as kubeadm sets it up.
    '--use-service-account-credentials=true',
    `--service-account-private-key-file=${cp.pki.serviceAccountKeyFile}`,
    `--root-ca-file=${cp.pki.serving.caFile}`,
    '--enable-hostpath-provisioner=true',
    '--kube-api-qps=100',
    '--kube-api-burst=200',
    // kwok's node leases can lag on a loaded machine: a node marked NotReady would have its pods marked
    // unready for good (no kubelet re-asserts them), so the grace period is 5 minutes instead of 50 s.
    '--node-monitor-grace-period=5m',
  ]);
}
