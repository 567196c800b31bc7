// Runs a command to completion and keeps everything it printed, for assertions and for failure messages.
import { spawn } from 'node:child_process';
import { basename } from 'node:path';
import { captureOutput } from './secrets.js';

export interface CommandResult {
  command: string;
  status: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string;
  timeoutMs?: number;
  /**
   * Keep stdout for the end-of-suite password scan too (stderr is always kept). Off by default:
   * stdout is often data that holds a Secret on purpose (`helm template`, `kubectl get -o yaml`).
   */
  captureStdout?: boolean;
  /**
   * Leave stderr out of the scan. Only for a client that echoes the caller's own input on purpose
   * (`kubectl apply` prints the patch it sent, Secret data included, when it is refused): say so where used.
   */
  skipStderrCapture?: boolean;
}

export function run(command: string, args: string[], options: RunOptions = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (status) => {
      clearTimeout(timer);
      const result = {
        command: [command, ...args].join(' '),
        status,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (!options.skipStderrCapture) captureOutput(`${basename(command)}.stderr`, result.stderr);
      if (options.captureStdout) captureOutput(`${basename(command)}.stdout`, result.stdout);
      resolve(result);
    });
    // A command may exit before reading its input (a refusal, a crash): its exit status tells, not EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** Like `run`, but a non-zero exit is an error that carries what the command printed. */
export async function runOk(command: string, args: string[], options: RunOptions = {}): Promise<CommandResult> {
  const result = await run(command, args, options);
  if (result.status !== 0) {
    throw new Error(`${result.command} exited ${result.status}\n${result.stderr}\n${result.stdout}`.trim());
  }
  return result;
}

/** Polls `probe` until it returns a value other than undefined, or fails with the last error seen. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  { timeoutMs = 30_000, intervalMs = 100 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const why = last instanceof Error ? `: ${last.message}` : last === undefined ? '' : `: ${String(last)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** waitFor for state inside this process (logs, fakes, caches): polls every 25 ms until `probe` is true. */
export async function eventually(
  what: string,
  probe: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  await waitFor(what, async () => ((await probe()) ? true : undefined), { timeoutMs, intervalMs: 25 });
}
