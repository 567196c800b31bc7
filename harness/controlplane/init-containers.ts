// An init container's own command, run on this machine once for each pod of a label selector that is
// scheduled on a kwok node: what a kubelet would do for that container, done openly, so that
// `kubectl logs -c <init container>` prints what the command printed. The command, its arguments and
// its env come from the pod as the API server stored it (the chart's rendering); `env` is laid over
// them where this machine differs from a cluster (no cluster DNS: a Service name is replaced by the
// address of the real local server behind it). It runs as the pod's user (runAsUser/runAsGroup, never
// root), and its output goes, in the CRI log format, to the file kwok serves for that container
// (cluster.ts `logs`); a pod deleted while its command runs has it stopped, as a kubelet stops a container.
// kwok's stages decide the pod's status, not this command's exit status.
import { appendFileSync, writeFileSync } from 'node:fs';
import { waitFor } from '../commands.js';
import { paths, type Json } from '../kube-rest.js';
import { asUser, startProgram, type RunningProgram } from '../programs/run.js';
import { PodPoller, type Cluster } from './cluster.js';

export interface InitContainerSpec {
  namespace: string;
  /** The pods, e.g. `job-name=dify-db-migration`. */
  labelSelector: string;
  /** The init container's name. */
  container: string;
  /** Laid over the container's own env; PATH included (where this machine keeps the container's programs). */
  env: Record<string, string>;
}

export interface InitContainerRun {
  pod: string;
  uid: string;
  /** The command's exit status, once it has exited. */
  status?: number | null;
  /** Lines of output written to the container's log so far. */
  lines: number;
  program?: RunningProgram;
}

const NOBODY = 65534;
const str = (v: unknown): string => String(v ?? '');

/** CRI log lines (`<time> <stream> F <line>`) for the complete lines of `text` after its first `done`; `final`: the last one too. */
export function criLines(stream: 'stdout' | 'stderr', text: string, done: number, final: boolean, at = new Date()) {
  const lines = text.split('\n');
  const complete = final && lines.at(-1) !== '' ? lines : lines.slice(0, -1);
  return complete.slice(done).map((line) => `${at.toISOString()} ${stream} F ${line}\n`);
}

/** The container's literal env (valueFrom is not resolved here) with `over` laid over it. */
export function containerEnv(container: Json, over: Record<string, string>): NodeJS.ProcessEnv {
  const own = ((container.env as Json[] | undefined) ?? []).filter((e) => e.value !== undefined);
  return { ...Object.fromEntries(own.map((e) => [str(e.name), str(e.value)])), ...over };
}

/** The user the container runs as: its own securityContext, then the pod's, then nobody. */
export function runAs(pod: Json, container: Json): { uid: number; gid: number } {
  const own = (container.securityContext as Json | undefined) ?? {};
  const podLevel = ((pod.spec as Json).securityContext as Json | undefined) ?? {};
  const pick = (key: string): number => Number(own[key] ?? podLevel[key] ?? NOBODY);
  return { uid: pick('runAsUser'), gid: pick('runAsGroup') };
}

/** The init container `name` of the pod, its command line and user; undefined without a command or as root. */
export function initCommand(pod: Json, name: string) {
  const initContainers = ((pod.spec as Json).initContainers as Json[] | undefined) ?? [];
  const container = initContainers.find((c) => c.name === name);
  if (!container) return undefined;
  const [command, ...args] = [...((container.command as string[]) ?? []), ...((container.args as string[]) ?? [])];
  const user = runAs(pod, container);
  return command && user.uid !== 0 ? { container, command, args, user } : undefined;
}

/** Problems: a pod without that init container, a command that could not be run, a failed listing of the pods. */
export class InitContainers extends PodPoller {
  /** Every run so far, in start order. */
  readonly runs: InitContainerRun[] = [];

  constructor(
    cluster: Cluster,
    private readonly spec: InitContainerSpec,
  ) {
    super(cluster, 250, `init container ${spec.container}`);
  }

  /** The selector's pods, but those being deleted. */
  private async pods(): Promise<Json[]> {
    const list = await this.cluster.rest.ok('GET', paths.pods(this.spec.namespace), {
      query: { labelSelector: this.spec.labelSelector },
    });
    return (list.items as Json[]).filter((p) => !(p.metadata as Json).deletionTimestamp);
  }

  /** Starts the command for each new scheduled pod; stops it for a pod deleted meanwhile, as a kubelet stops its containers. */
  protected async pass(): Promise<void> {
    const pods = await this.pods();
    const live = new Set(pods.map((p) => str((p.metadata as Json).uid)));
    for (const r of this.runs) if (!live.has(r.uid) && r.status === undefined) void r.program?.stop(2_000);
    for (const pod of pods) if (!this.runs.some((r) => r.uid === str((pod.metadata as Json).uid))) this.begin(pod);
  }

  private begin(pod: Json): void {
    if (!(pod.spec as Json).nodeName) return;
    const meta = pod.metadata as Json;
    const run: InitContainerRun = { pod: str(meta.name), uid: str(meta.uid), lines: 0 };
    this.runs.push(run);
    void this.run(pod, run).catch((err: Error) => this.errors.push(`pod ${run.pod}: ${err.message}`));
  }

  /**
   * Runs the container's command to its end, its output written to the container's log file as it comes (the
   * file is the container's in every pod of the namespace: only the latest run writes it).
   */
  private async run(pod: Json, run: InitContainerRun): Promise<void> {
    const planned = initCommand(pod, this.spec.container);
    if (!planned) {
      this.errors.push(`pod ${run.pod}: no init container ${this.spec.container} with a command and a non-root user`);
      run.status = -1;
      return;
    }
    const { container, command, args, user } = planned;
    const file = this.cluster.containerLogFile(this.spec.namespace, this.spec.container);
    writeFileSync(file, '');
    const program = startProgram({
      name: `init-${run.pod}-${this.spec.container}`,
      ...asUser(user.uid, user.gid, command, args),
      env: containerEnv(container, this.spec.env),
    });
    run.program = program;
    const written = { stdout: 0, stderr: 0 };
    const flush = (final: boolean): void => {
      if (this.runs.at(-1) !== run) return;
      for (const stream of ['stdout', 'stderr'] as const) {
        const lines = criLines(stream, program[stream], written[stream], final);
        written[stream] += lines.length;
        run.lines += lines.length;
        if (lines.length) appendFileSync(file, lines.join(''));
      }
    };
    const timer = setInterval(() => flush(false), 200);
    run.status = await program.exited;
    clearInterval(timer);
    flush(true);
  }

  /** The runs for `pods` (default: the selector's current pods) once `done` holds for each of them. */
  private async runsOf(
    pods: Json[] | undefined,
    what: string,
    done: (r: InitContainerRun) => boolean,
    timeoutMs: number,
  ) {
    return waitFor(
      `the init container ${this.spec.container} ${what} for every pod of ${this.spec.labelSelector}`,
      async () => {
        const current = pods ?? (await this.pods());
        const runs = current.map((p) => this.runs.find((r) => r.uid === str((p.metadata as Json).uid)));
        return current.length > 0 && runs.every((r) => r && done(r)) ? (runs as InitContainerRun[]) : undefined;
      },
      { timeoutMs, intervalMs: 200 },
    );
  }

  /** Waits until the command has printed something, or ended, for `pods` (default: the selector's current pods). */
  printed(pods?: Json[], timeoutMs = 60_000): Promise<InitContainerRun[]> {
    return this.runsOf(pods, 'to print or end', (r) => r.lines > 0 || r.status !== undefined, timeoutMs);
  }

  /** Waits until the command has run to its end for `pods` (default: the selector's current pods). */
  settled(pods?: Json[], timeoutMs = 60_000): Promise<InitContainerRun[]> {
    return this.runsOf(pods, 'to end', (r) => r.status !== undefined, timeoutMs);
  }

  async stop(): Promise<void> {
    await this.stopPolling();
    await Promise.all(this.runs.map((r) => r.program?.stop(2_000)));
  }
}
