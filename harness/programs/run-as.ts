// Real programs as their container runs them: as the program's own user (setpriv; the tests run as root),
// stdout and stderr as pipes, in a private temporary folder removed at the end, with the env the chart renders.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type CommandResult } from '../commands.js';
import { captureOutput } from '../secrets.js';

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

/** A temporary folder owned by `user`, removed by the returned function. */
export function privateDir(user: SystemUser, prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), `dify-${prefix}-`));
  chownSync(dir, user.uid, user.gid);
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

const asUser = (user: SystemUser, command: string, args: string[]): string[] => [
  `--reuid=${user.uid}`,
  `--regid=${user.gid}`,
  '--init-groups',
  '--',
  command,
  ...args,
];

/** Runs a command to completion as `user`, env exactly as given (no inherited secrets). */
export function runAs(
  user: SystemUser,
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 60_000,
): Promise<CommandResult> {
  return run('setpriv', asUser(user, command, args), { env, timeoutMs });
}

/** A server started as `user`, its stdout and stderr read from pipes. */
export class PipedServer {
  private output = '';
  private readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;

  constructor(
    readonly name: string,
    user: SystemUser,
    command: string,
    args: string[],
    env: NodeJS.ProcessEnv,
    cwd?: string,
  ) {
    // Its own process group, so whatever it leaves behind can be killed with it.
    this.child = spawn('setpriv', asUser(user, command, args), {
      env,
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const keep = (b: Buffer): void => {
      this.output += b.toString('utf8');
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
    process.once('exit', () => this.killGroup('SIGKILL'));
  }

  get log(): string {
    return this.output;
  }
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private killGroup(signal: NodeJS.Signals): void {
    try {
      if (this.child.pid) process.kill(-this.child.pid, signal);
    } catch {
      /* the group is gone */
    }
  }

  /**
   * SIGTERM to the process itself (what the kubelet sends the container's process), SIGKILL after 15 s;
   * then SIGKILL to anything left in its group. Returns the exit code; keeps the output for the password scan.
   */
  async stop(): Promise<number | null> {
    if (this.running) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
      await this.exited;
      clearTimeout(timer);
    }
    this.killGroup('SIGKILL');
    captureOutput(`${this.name}.log`, this.output);
    return this.exited;
  }
}

/** Retries `attempt` every 250 ms until it returns true, the server exits, or 30 s pass. */
export async function until(server: PipedServer, what: string, attempt: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (!server.running) throw new Error(`${server.name} exited before ${what}; it printed:\n${server.log}`);
    if (await attempt()) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`${server.name}: no ${what} within 30 s; it printed:\n${server.log}`);
}
