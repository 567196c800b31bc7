// Ctrl-C in the terminal running `npm run demo` leaves nothing behind. The demo is started as a user
// starts it (`npm run demo`, in a process group of its own, as a shell puts a foreground job); once it
// says the cluster is running, SIGINT goes to that whole group, as a terminal's Ctrl-C does. Then: it
// exits within a bounded time and says what it stopped; no process it started is left (found by the
// process tree taken while it ran, and by its temporary folders in any command line); its pod range's
// route, its lock, its temporary folders and its PV folders are gone. Twice: a second demo starts after the first.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { binary, repoRoot } from '../../harness/binaries.js';
import { run, waitFor } from '../../harness/commands.js';

/** What a terminal's Ctrl-C may take: the demo's own deadline is 30 s, after which it kills what is left. */
const EXIT_BOUND_MS = 45_000;

interface Proc {
  pid: number;
  ppid: number;
  /** Start time in clock ticks since boot: a pid seen again with another start time is another process. */
  start: string;
  cmdline: string;
}

function readProc(pid: string): Proc | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses): state is field 3, ppid 4, starttime 22.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    return { pid: Number(pid), ppid: Number(fields[1]), start: String(fields[19]), cmdline };
  } catch {
    return undefined;
  }
}

const processes = (): Proc[] =>
  readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(readProc)
    .filter((p): p is Proc => p !== undefined);

/** `root` and every process below it, now. */
function tree(root: number): Proc[] {
  const all = processes();
  const found = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of all)
      if (found.has(p.ppid) && !found.has(p.pid)) {
        found.add(p.pid);
        grew = true;
      }
  }
  return all.filter((p) => found.has(p.pid));
}

const alive = (p: Proc): boolean => readProc(String(p.pid))?.start === p.start;
const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** The harness's temporary folders (mkdtemp: a prefix and six characters). */
const tempDirPattern = new RegExp(`${escape(tmpdir())}/dify-guard-[a-z-]+-[A-Za-z0-9]{6}(?![A-Za-z0-9])`, 'g');
const localRoutes = async (): Promise<string> => (await run('ip', ['route', 'show', 'table', 'local'])).stdout;

interface Running {
  pid: number;
  output: () => string;
  /** When `npm` itself exited: the shell gives the terminal back then. */
  npmExited: Promise<number>;
  closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `npm run demo` in a new process group (a shell's foreground job), until it says it is running. */
async function startDemo(): Promise<Running> {
  const child = spawn('npm', ['run', '--silent', 'demo'], {
    cwd: repoRoot,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString('utf8')));
  child.stderr.on('data', (b: Buffer) => (out += b.toString('utf8')));
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  const npmExited = new Promise<number>((resolve) => child.once('exit', () => resolve(Date.now())));
  const running: Running = { pid: child.pid as number, output: () => out, closed, npmExited };
  await Promise.race([
    waitFor(
      'the demo to say it is running',
      () => (out.includes('Press Ctrl-C to stop everything.') ? true : undefined),
      {
        timeoutMs: 540_000,
        intervalMs: 250,
      },
    ),
    closed.then(() => {
      throw new Error(`the demo ended before it was running:\n${out.slice(-4000)}`);
    }),
  ]);
  return running;
}

/** What the running demo made: its processes, temporary folders, pod range and PV folders. */
async function whatItMade(demo: Running): Promise<{ procs: Proc[]; dirs: string[]; range: string; pvDirs: string[] }> {
  const procs = tree(demo.pid);
  const dirs = [...new Set(procs.flatMap((p) => [...p.cmdline.matchAll(tempDirPattern)].map((m) => m[0])))];
  const range = /pod addresses (198\.18\.\d+\.0\/24)/.exec(demo.output())?.[1] ?? 'none';
  const kubeconfig = /export KUBECONFIG=(\S+)/.exec(demo.output())?.[1] ?? '';
  const pvs = await run(
    binary('kubectl'),
    ['get', 'pv', '-o', 'jsonpath={range .items[*]}{.spec.hostPath.path}{"\\n"}{end}'],
    { env: { ...process.env, KUBECONFIG: kubeconfig } },
  );
  const pvDirs = pvs.stdout.split('\n').filter((l) => l.startsWith('/tmp/hostpath_pv/'));
  return { procs, dirs, range, pvDirs };
}

async function interruptOnce(t: Test, round: number): Promise<void> {
  const demo = await startDemo();
  const made = await whatItMade(demo);
  const commandLines = made.procs.map((p) => p.cmdline).join('\n');
  for (const program of ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kwok', 'postgres'])
    t.match(commandLines, new RegExp(`/${program} `), `demo ${round} started ${program} (seen in its process tree)`);
  t.match(commandLines, /dist\/src\/main\.js/, `demo ${round} started dify-guard processes`);
  t.ok(made.dirs.length > 0 && made.dirs.every(existsSync), `its temporary folders exist: ${made.dirs.join(' ')}`);
  t.ok(made.pvDirs.length > 0 && made.pvDirs.every(existsSync), 'its PV folders exist');
  t.match(await localRoutes(), `local ${made.range} `, `its pod range ${made.range} is routed here`);

  const sent = Date.now();
  process.kill(-demo.pid, 'SIGINT');
  const ended = await Promise.race([
    demo.closed,
    new Promise<undefined>((r) => setTimeout(() => r(undefined), EXIT_BOUND_MS)),
  ]);
  const took = Date.now() - sent;
  const npmTook = ((await Promise.race([demo.npmExited, Promise.resolve(Date.now())])) - sent) / 1000;
  if (!ended) process.kill(-demo.pid, 'SIGKILL');
  const how = ended ? `exit code ${ended.code}, signal ${ended.signal}` : 'still running';
  t.ok(ended, `demo ${round} exits within ${EXIT_BOUND_MS / 1000} s of Ctrl-C (${(took / 1000).toFixed(1)} s, ${how})`);
  t.match(
    demo.output(),
    'Stopping the dify-guard pods, kwok, the controllers, kube-apiserver, etcd and PostgreSQL',
    'it says what it stops',
  );
  t.ok(
    npmTook >= took / 1000 - 1,
    `npm returns the terminal only once the demo has stopped (npm ${npmTook.toFixed(1)} s, demo ${(took / 1000).toFixed(1)} s)`,
  );
  t.match(
    demo.output(),
    "Stopped; the routes, the temporary folders and this cluster's /tmp/hostpath_pv folders are removed.",
    'and that it is done',
  );

  // Exiting processes may still be in /proc for a moment after the demo: 2 s at most.
  const left = await waitFor(
    'the processes it started to be gone',
    () => {
      const l = made.procs.filter(alive);
      return l.length === 0 ? l : undefined;
    },
    { timeoutMs: 2_000, intervalMs: 100 },
  ).catch(() => made.procs.filter(alive));
  t.same(
    left.map((p) => p.cmdline),
    [],
    'no process it started is left',
  );
  const naming = processes().filter((p) => made.dirs.some((d) => p.cmdline.includes(d)));
  t.same(
    naming.map((p) => p.cmdline),
    [],
    'no process names its temporary folders',
  );
  t.notMatch(await localRoutes(), `local ${made.range} `, 'its route is removed');
  const [, second, third] = made.range.split('.').map(Number) as [number, number, number];
  const slot = String((second - 18) * 256 + third);
  t.notOk(existsSync(join(tmpdir(), 'dify-guard-pod-ranges', slot)), 'and its lock file');
  t.same(made.dirs.filter(existsSync), [], 'its temporary folders are removed');
  t.same(made.pvDirs.filter(existsSync), [], 'its PV folders are removed');
}

t.test('Ctrl-C stops the demo and removes what it made', (t) => interruptOnce(t, 1));
t.test('a second demo starts afterwards, and Ctrl-C stops it as well', (t) => interruptOnce(t, 2));
