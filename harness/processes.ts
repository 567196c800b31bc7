// Child processes that never outlive the test process: each runs in its own process group (so its
// own children go with it), writes its output to a file the tests can read, and is killed on
// normal teardown, on 'exit', on SIGINT/SIGTERM/SIGHUP, and by a watchdog if this process is SIGKILLed.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from './commands.js';
import { captureLogs } from './secrets.js';

/** Anything with tap's `t.teardown`, so what a test starts is stopped even when the test fails. */
export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

const live = new Set<ManagedProcess>();
/** Temporary folders to remove at exit, each with the pid of its watchdog. */
const tempDirs = new Map<string, number | undefined>();
let handlersInstalled = false;
let interruptHandler: (() => Promise<void>) | undefined;
let interruptedAt: number | undefined;

/** `signal` to the process group `pid` leads; nothing if the group is gone. */
export function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    /* the group is gone */
  }
}

/** Synchronous last-chance cleanup: only sync work runs in 'exit' and signal handlers. */
function cleanupNow(): void {
  for (const p of live) if (p.pid) killGroup(p.pid, 'SIGKILL');
  live.clear();
  // Their work is done here and now: a watchdog left polling would outlive this process by up to a second.
  for (const watchdog of tempDirs.values()) if (watchdog) killGroup(watchdog, 'SIGKILL');
  if (process.env.DIFY_GUARD_KEEP_TMP === '1') return;
  for (const dir of tempDirs.keys())
    try {
      captureLogs(dir);
      rmSync(dir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  tempDirs.clear();
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', cleanupNow);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      // npm forwards the terminal's Ctrl-C, so one keypress arrives twice: repeats within 2 s are the same one.
      if (interruptHandler && interruptedAt !== undefined && Date.now() - interruptedAt < 2000) return;
      if (interruptHandler && interruptedAt === undefined) {
        // A program that stops gracefully (the demo) gets 30 s; a later signal or the deadline kills.
        interruptedAt = Date.now();
        const force = setTimeout(() => {
          cleanupNow();
          process.exit(130);
        }, 30_000);
        void interruptHandler()
          .catch(() => undefined)
          .finally(() => {
            clearTimeout(force);
            cleanupNow();
            process.exit(130);
          });
        return;
      }
      cleanupNow();
      process.removeListener(signal, onSignal);
      // Re-raise so the default action (or tap's own handler) still ends the process.
      process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

/** Makes SIGINT/SIGTERM/SIGHUP call `stop` (then exit 130) instead of killing everything at once. */
export function onInterrupt(stop: () => Promise<void>): void {
  interruptHandler = stop;
  installHandlers();
}

/**
 * Registers a temporary folder to remove at exit, and starts a watchdog that kills every process
 * whose pid file is in it (and removes it) once this process is gone, even after a SIGKILL.
 */
export function trackTempDir(dir: string): { release(): void } {
  installHandlers();
  const keep = process.env.DIFY_GUARD_KEEP_TMP === '1' ? '1' : '0';
  const watchdog = spawn(
    'bash',
    [
      '-c',
      'while kill -0 "$1" 2>/dev/null; do sleep 1; done; ' +
        'for f in "$2"/*.pid; do [ -f "$f" ] && kill -KILL -- "-$(cat "$f")" 2>/dev/null; done; ' +
        '[ "$3" = 1 ] || rm -rf "$2"',
      'dify-guard-watchdog',
      String(process.pid),
      dir,
      keep,
    ],
    { detached: true, stdio: 'ignore' },
  );
  watchdog.unref();
  tempDirs.set(dir, watchdog.pid);
  return {
    release: () => {
      if (watchdog.pid) killGroup(watchdog.pid, 'SIGKILL');
      tempDirs.delete(dir);
      captureLogs(dir);
      if (keep !== '1') rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface ManagedProcessOptions {
  /** Name used for the log and pid files, e.g. 'etcd'. */
  name: string;
  command: string;
  args: string[];
  /** Folder for `<name>.log` (stdout and stderr, appended across restarts) and `<name>.pid`. */
  dir: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export class ManagedProcess {
  readonly logPath: string;
  private readonly pidPath: string;
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> = Promise.resolve(null);
  private exitCode: number | null | undefined;

  constructor(private readonly options: ManagedProcessOptions) {
    this.logPath = join(options.dir, `${options.name}.log`);
    this.pidPath = join(options.dir, `${options.name}.pid`);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }
  get running(): boolean {
    return this.child !== undefined && this.exitCode === undefined;
  }
  get name(): string {
    return this.options.name;
  }

  start(): void {
    if (this.running) throw new Error(`${this.options.name} is already running`);
    installHandlers();
    const fd = openSync(this.logPath, 'a');
    try {
      const child = spawn(this.options.command, this.options.args, {
        cwd: this.options.cwd,
        env: this.options.env ?? process.env,
        detached: true,
        stdio: ['ignore', fd, fd],
      });
      this.child = child;
      this.exitCode = undefined;
      this.exited = new Promise((resolve) => {
        child.once('exit', (code, signal) => {
          this.exitCode = code ?? (signal ? -1 : null);
          live.delete(this);
          try {
            unlinkSync(this.pidPath);
          } catch {
            /* already gone */
          }
          resolve(this.exitCode);
        });
        child.once('error', () => {
          this.exitCode = -1;
          live.delete(this);
          resolve(-1);
        });
      });
      if (child.pid) writeFileSync(this.pidPath, String(child.pid));
      live.add(this);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Starts the process and polls `ready` (as waitFor does) until it says true; fails at once, with the
   * process's last output, if the process exits first.
   */
  async startUntilReady(
    what: string,
    ready: () => Promise<boolean>,
    options: { timeoutMs?: number; intervalMs?: number } = {},
  ): Promise<void> {
    this.start();
    await Promise.race([this.failOnExit(), waitFor(what, async () => ((await ready()) ? true : undefined), options)]);
  }

  /** Rejects as soon as the process exits: race it against a readiness wait. */
  async failOnExit(): Promise<never> {
    const code = await this.exited;
    throw new Error(`${this.options.name} exited (code ${code}) before it was ready; last output:\n${this.tail()}`);
  }

  /** SIGTERM to the whole group, SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    const child = this.child;
    if (!child?.pid || !this.running) return;
    killGroup(child.pid, 'SIGTERM');
    const timer = setTimeout(() => killGroup(child.pid as number, 'SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
    // Whatever the leader left behind in its group goes too.
    killGroup(child.pid, 'SIGKILL');
  }

  /** SIGKILL at once, as a crash would. */
  async kill(): Promise<void> {
    if (!this.child?.pid || !this.running) return;
    killGroup(this.child.pid, 'SIGKILL');
    await this.exited;
  }

  log(): string {
    return existsSync(this.logPath) ? readFileSync(this.logPath, 'utf8') : '';
  }

  tail(lines = 40): string {
    return this.log().split('\n').slice(-lines).join('\n');
  }
}
