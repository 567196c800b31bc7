// Runs a real program the chart configures the way its container runs it: stdout and stderr are pipes
// (as a container runtime gives them, not files), optionally as the program's own user and inside a
// private mount namespace where the rendered configuration is bind-mounted read-only at the path the
// chart mounts it. Every process is killed with its process group when the test process ends, and its
// output is captured for the end-of-suite password scan.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, waitFor, type CommandResult } from '../commands.js';
import { killGroup, trackTempDir } from '../processes.js';
import { captureOutput } from '../secrets.js';

const live = new Set<RunningProgram>();
process.once('exit', () => {
  for (const p of live) p.killNow();
});

export interface ProgramOptions {
  /** Short name for messages and captured output, e.g. 'squid'. */
  name: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** What stop() does by default: see RunningProgram.stop. */
  stop?: StopOptions;
}

export interface StopOptions {
  graceMs: number;
  to: 'group' | 'process';
}

export class RunningProgram {
  private stdoutText = '';
  private stderrText = '';
  private logText = '';
  private exitCode: number | null | undefined;
  readonly exited: Promise<number | null>;

  constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    private readonly stopDefaults: StopOptions = { graceMs: 3000, to: 'group' },
  ) {
    child.stdout?.on('data', (b: Buffer) => {
      this.stdoutText += b.toString('utf8');
      this.logText += b.toString('utf8');
    });
    child.stderr?.on('data', (b: Buffer) => {
      this.stderrText += b.toString('utf8');
      this.logText += b.toString('utf8');
    });
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : null);
        live.delete(this);
        captureOutput(`${name}.stdout`, this.stdoutText);
        captureOutput(`${name}.stderr`, this.stderrText);
        resolve(this.exitCode);
      });
      child.once('error', () => {
        this.exitCode = -1;
        live.delete(this);
        resolve(-1);
      });
    });
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }
  get stdout(): string {
    return this.stdoutText;
  }
  get stderr(): string {
    return this.stderrText;
  }
  /** stdout and stderr as they came, interleaved. */
  get log(): string {
    return this.logText;
  }

  /** What it printed, for failure messages. */
  output(): string {
    return `--- ${this.name} stdout ---\n${this.stdoutText.slice(-4000)}\n--- ${this.name} stderr ---\n${this.stderrText.slice(-4000)}`;
  }

  /** Rejects once the program exits: race it against a readiness wait. */
  async failOnExit(): Promise<never> {
    const code = await this.exited;
    throw new Error(`${this.name} exited (code ${code}) before it was ready\n${this.output()}`);
  }

  /**
   * SIGTERM to the group (or, with `to: 'process'`, to the program itself, as the kubelet signals only the
   * container's process), SIGKILL to the group after `graceMs` (Squid waits shutdown_lifetime, 30 s, for
   * clients) and once it has exited. Returns its exit code.
   */
  async stop(graceMs = this.stopDefaults.graceMs, to = this.stopDefaults.to): Promise<number | null> {
    if (this.running && this.child.pid) {
      if (to === 'group') killGroup(this.child.pid, 'SIGTERM');
      else this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.killNow(), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    this.killNow();
    return this.exited;
  }

  killNow(): void {
    if (this.child.pid) killGroup(this.child.pid, 'SIGKILL');
  }
}

/**
 * Starts a program in its own process group with stdout and stderr as anonymous pipes created by root, as
 * a container runtime gives them. Node's own 'pipe' stdio are socketpairs, which a program reopening
 * /dev/stdout meets differently (ENXIO), so bash puts a real pipe, drained by cat, in between.
 */
export function startProgram(options: ProgramOptions): RunningProgram {
  const script = 'exec > >(exec cat) 2> >(exec cat >&2); exec "$0" "$@"';
  const child = spawn('bash', ['-c', script, options.command, ...options.args], {
    env: options.env ?? process.env,
    cwd: options.cwd,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const program = new RunningProgram(options.name, child, options.stop);
  live.add(program);
  return program;
}

/** Runs a program to completion with piped output (e.g. `nginx -t`). */
export async function runProgram(
  options: ProgramOptions,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const program = startProgram(options);
  const status = await program.exited;
  return { status, stdout: program.stdout, stderr: program.stderr };
}

function canConnect(host: string, port: number, localAddress?: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port, localAddress });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Retries `attempt` (every `intervalMs`) until it returns true, or 30 s pass; fails at once, with the
 * program's output, if the program exits first.
 */
export async function until(
  program: RunningProgram,
  what: string,
  attempt: () => Promise<boolean>,
  intervalMs = 250,
): Promise<void> {
  const ready = waitFor(`${program.name}: ${what}`, async () => ((await attempt()) ? true : undefined), {
    timeoutMs: 30_000,
    intervalMs,
  });
  await Promise.race([ready, program.failOnExit()]);
}

/** Waits until host:port accepts connections; fails at once, with its output, if the program exits first. */
export async function waitForPort(program: RunningProgram, host: string, port: number): Promise<void> {
  await until(program, `listening on ${host}:${port}`, () => canConnect(host, port), 100);
}

/**
 * A private folder removed when the test process ends (even after a SIGKILL, by a watchdog), owned by
 * `owner` when given (a program's own user writes there).
 */
export function privateDir(prefix: string, owner?: SystemUser): string {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  trackTempDir(dir);
  if (owner) chownSync(dir, owner.uid, owner.gid);
  return dir;
}

/** Programs that start as root and switch user (Squid), or mount namespaces, need root: say so and how. */
export function requireRoot(why: string): void {
  if (process.getuid?.() === 0) return;
  throw new Error(
    `${why} needs root (uid 0), as the container starts it; run the test as root, e.g. in the project's test container`,
  );
}

export interface BindMount {
  source: string;
  target: string;
  readOnly?: boolean;
}

/**
 * The command line that runs `command args` in a private mount namespace with these bind mounts, the
 * way a container sees its volumes: the host's own files at those paths are left untouched.
 */
export function inMountNamespace(
  mounts: BindMount[],
  command: string,
  args: string[],
): { command: string; args: string[] } {
  const script = mounts
    .map((_, i) => {
      const ro = mounts[i]!.readOnly ? ` && mount -o remount,bind,ro "$T${i}"` : '';
      return `mount --bind "$S${i}" "$T${i}"${ro}`;
    })
    .join(' && ');
  const vars = mounts.flatMap((m, i) => [`S${i}=${m.source}`, `T${i}=${m.target}`]);
  return {
    command: 'unshare',
    args: [
      '--mount',
      '--propagation',
      'private',
      '--',
      'env',
      ...vars,
      'sh',
      '-c',
      `${script} && exec "$0" "$@"`,
      command,
      ...args,
    ],
  };
}

export interface SystemUser {
  name: string;
  uid: number;
  gid: number;
}

/** A Debian system user (postgres, redis), created by its package. */
export function systemUser(name: string): SystemUser {
  const id = (flag: string): number => Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
  return { name, uid: id('-u'), gid: id('-g') };
}

/** setpriv's arguments that run `command args` as uid:gid, with no supplementary groups (as a container). */
const setpriv = (uid: number, gid: number, command: string, args: string[]): string[] => [
  `--reuid=${uid}`,
  `--regid=${gid}`,
  '--clear-groups',
  '--',
  command,
  ...args,
];

/**
 * `command args` run as uid:gid the way a container runtime starts a non-root container: the stdout and
 * stderr pipes are handed to that user first (runc does the same), so /dev/stdout can be opened by it.
 */
export function asUser(uid: number, gid: number, command: string, args: string[]): { command: string; args: string[] } {
  return {
    command: 'sh',
    args: [
      '-c',
      `chown ${uid}:${gid} /proc/self/fd/1 /proc/self/fd/2 && exec setpriv "$@"`,
      'sh',
      ...setpriv(uid, gid, command, args),
    ],
  };
}

/**
 * A server started as `user` (startProgram's pipes), env exactly as given (no inherited secrets); stop()
 * sends SIGTERM to the program itself, as the kubelet does to a container's process, SIGKILL after 15 s.
 */
export function startAs(
  name: string,
  user: SystemUser,
  command: string,
  args: string[],
  options: { env: NodeJS.ProcessEnv; cwd?: string },
): RunningProgram {
  const stop: StopOptions = { graceMs: 15_000, to: 'process' };
  return startProgram({ name, ...asUser(user.uid, user.gid, command, args), ...options, stop });
}

/** Runs a command to completion as `user`, env exactly as given (no inherited secrets). */
export function runAs(
  user: SystemUser,
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 60_000,
): Promise<CommandResult> {
  return run('setpriv', setpriv(user.uid, user.gid, command, args), { env, timeoutMs });
}
