// `npm run bench`: builds dist/ (package.json), then starts one real control plane (etcd +
// kube-apiserver, harness/controlplane/harness.ts), the real dify-guard process on it (dist/src/main.js
// via the harness, its PVC cache synced) and a bare HTTPS server, and measures:
//   1. server view (bench/lib/server-view.ts), 2. API-server view (bench/lib/apiserver-view.ts),
//   3. dify-guard's API calls per admission request (both views), 4. CPU profiles of dify-guard
//      under load (separate runs after the measured ones, so profiling never skews a number).
// Writes bench/results/<time>.json and latest.json, prints a table; --write-md refreshes the
// generated block of BENCHMARKS.md. Loopback only. See BENCHMARKS.md for the method.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { contract, expandName } from '../src/contract.js';
import { DifyGuard } from '../harness/controlplane/dify-guard.js';
import { ControlPlane } from '../harness/controlplane/harness.js';
import { issueClientCert } from '../harness/controlplane/pki.js';
import { binary, repoRoot } from '../harness/binaries.js';
import { loadReview } from '../harness/fixtures.js';
import { paths } from '../harness/kube-rest.js';
import { pvcManifest } from '../harness/manifests.js';
import { reservePort } from '../harness/ports.js';
import { ManagedProcess } from '../harness/processes.js';
import { runApiServerView } from './lib/apiserver-view.js';
import { closedLoop, postOnce, sameAnswerAs } from './lib/load.js';
import { runMicro } from './lib/micro.js';
import { probeEnv, ServerProbe } from './lib/probe.js';
import { summarizeProfile, type ProfileSummary } from './lib/profile.js';
import { checkTargets, markdownReport, terminalReport, withGeneratedBlock, type BenchResult } from './lib/report.js';
import { PAYLOADS, runServerView, type ServerTarget } from './lib/server-view.js';

const { values: args } = parseArgs({
  options: {
    help: { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    n: { type: 'string' },
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    connections: { type: 'string', default: '10' },
    rate: { type: 'string', default: '1000' },
    'skip-server-view': { type: 'boolean', default: false },
    'skip-apiserver-view': { type: 'boolean', default: false },
    'no-profile': { type: 'boolean', default: false },
    'no-autocannon-rate': { type: 'boolean', default: false },
    'write-md': { type: 'boolean', default: false },
    // Extra Node flags for the dify-guard process only, for experiments (e.g. --max-semi-space-size=8).
    'guard-node-options': { type: 'string', default: '' },
    // Extra env for the dify-guard process, KEY=VALUE, repeatable (e.g. DIFY_GUARD_EVENTS_ENABLED=false).
    'guard-env': { type: 'string', multiple: true, default: [] },
  },
});

const quick = args.quick === true;
const seconds = Number(args.seconds ?? (quick ? 3 : 10));
const warmupSeconds = Number(args.warmup ?? (quick ? 1 : 3));
const n = Number(args.n ?? (quick ? 50 : 500));
const RELEASE = 'dify';
const GUARD_USER = 'bench:dify-guard';
const resultsDir = join(repoRoot, 'bench/results');
const started = new Date();
const log = (line: string): void => {
  process.stderr.write(`[bench ${((Date.now() - started.getTime()) / 1000).toFixed(0).padStart(4)} s] ${line}\n`);
};

function firstLine(command: string, commandArgs: string[]): string {
  try {
    return (
      execFileSync(command, commandArgs, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
        .split('\n')[0]
        ?.trim() ?? ''
    );
  } catch {
    return 'unknown';
  }
}

function cpuModel(): string {
  const lscpu = firstLine('bash', ['-c', "lscpu | sed -n 's/^Model name: *//p' | head -1"]);
  return lscpu && lscpu !== 'unknown' ? lscpu : (cpus()[0]?.model ?? 'unknown');
}

/** A kubeconfig for dify-guard under its own user (group system:masters), so its requests can be told apart in the audit log. */
function guardKubeconfig(cp: ControlPlane): string {
  const cert = issueClientCert(join(cp.dir, 'pki'), GUARD_USER, ['system:masters']);
  const file = join(cp.dir, 'dify-guard.kubeconfig');
  writeFileSync(
    file,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'bench', cluster: { server: cp.server, 'certificate-authority': cp.pki.serving.caFile } }],
      users: [{ name: 'dify-guard', user: { 'client-certificate': cert.certFile, 'client-key': cert.keyFile } }],
      contexts: [{ name: 'bench', context: { cluster: 'bench', user: 'dify-guard' } }],
      'current-context': 'bench',
    }),
    { mode: 0o600 },
  );
  return file;
}

/** The Node flags the image runs dify-guard with: those between `node` and the entry in the Dockerfile's CMD. */
function imageNodeFlags(dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8')): string[] {
  const cmd = [...dockerfile.matchAll(/^CMD\s+(\[.*\])\s*$/gm)].at(-1)?.[1];
  const argv = cmd ? (JSON.parse(cmd) as unknown) : undefined;
  if (!Array.isArray(argv) || argv[0] !== 'node' || argv.at(-1) !== 'dist/src/main.js') {
    throw new Error('Dockerfile: expected CMD ["node", ...flags, "dist/src/main.js"]');
  }
  return argv.slice(1, -1).map(String);
}

async function startGuard(cp: ControlPlane, kubeconfig: string, probeFile: string): Promise<DifyGuard> {
  // As the image runs it (its CMD's flags), then any experiment's flags (later flags win).
  const extra = [
    ...imageNodeFlags(),
    ...String(args['guard-node-options'] ?? '')
      .split(' ')
      .filter(Boolean),
  ];
  const env = Object.fromEntries(
    (args['guard-env'] ?? []).map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
  );
  return DifyGuard.start(cp, { entry: 'dist', env: { ...env, KUBECONFIG: kubeconfig, ...probeEnv(probeFile, extra) } });
}

async function startBare(
  cp: ControlPlane,
  guard: DifyGuard,
  probeFile: string,
): Promise<{ process: ManagedProcess; port: number; release(): void }> {
  const reserved = await reservePort();
  const bare = new ManagedProcess({
    name: 'bare-server',
    dir: cp.dir,
    command: process.execPath,
    args: [join(repoRoot, 'bench/bare-server.mjs')],
    env: {
      PATH: process.env.PATH ?? '',
      BENCH_BARE_PORT: String(reserved.port),
      BENCH_BARE_CERT: guard.certs.certFile,
      BENCH_BARE_KEY: guard.certs.keyFile,
      ...probeEnv(probeFile),
    },
  });
  const endpoint = { host: '127.0.0.1', port: reserved.port, path: '/', ca: readFileSync(guard.certs.caFile) };
  await bare.startUntilReady('bare server', async () => (await postOnce(endpoint, '{}')).status === 200, {
    timeoutMs: 15_000,
  });
  return { process: bare, port: reserved.port, release: () => reserved.release() };
}

interface ProfiledServer {
  name: string;
  port: number;
  caFile: string;
  probe: ServerProbe;
}

/**
 * CPU profile of a running server under the fixed-connections load of a payload, just that
 * window (in-process inspector session; its own frames are left out of the summary).
 */
async function profileServer(
  server: ProfiledServer,
  payload: (typeof PAYLOADS)[number],
  profileDir: string,
): Promise<ProfileSummary> {
  mkdirSync(profileDir, { recursive: true });
  const endpoint = { host: '127.0.0.1', port: server.port, path: payload.path, ca: readFileSync(server.caFile) };
  const body = JSON.stringify(loadReview(payload.fixture));
  const expected = (await postOnce(endpoint, body)).text;
  const file = join(profileDir, `${server.name}-${payload.id}.cpuprofile`);
  await server.probe.settle();
  log(`profile ${server.name} ${payload.id}: ${seconds} s under load`);
  await server.probe.command('profile-start');
  const load = await closedLoop(
    { endpoint, body, sameAnswer: sameAnswerAs(expected) },
    {
      connections: Number(args.connections),
      seconds,
    },
  );
  await server.probe.command(`profile-stop ${file}`);
  return { ...summarizeProfile(file, load.requests), file: relative(repoRoot, file) };
}

const HELP = `npm run bench [-- options]
  --quick                  development numbers: 3 s runs, 1 s warm-up, n=50
  --seconds S, --warmup S  length of each measured run and of its warm-up
  --n N                    API-server view: requests per kind
  --connections C          fixed connections (default 10); --rate R: paced rate (default 1000 req/s)
  --skip-server-view, --skip-apiserver-view, --no-profile, --no-autocannon-rate
  --write-md               refresh the generated block of BENCHMARKS.md
  --guard-node-options "..."  --guard-env KEY=VALUE (repeatable): experiments on the dify-guard process`;

const packageVersion = (name: string): string =>
  (JSON.parse(readFileSync(join(repoRoot, `node_modules/${name}/package.json`), 'utf8')) as { version: string })
    .version;

function toolVersions(): Record<string, string> {
  return {
    node: process.version,
    'kube-apiserver': firstLine(binary('kube-apiserver'), ['--version']).replace(/^Kubernetes /, ''),
    etcd: firstLine(binary('etcd'), ['--version']).replace(/^etcd Version: /, 'v'),
    helm: firstLine(binary('helm'), ['version', '--short']),
    autocannon: packageVersion('autocannon'),
    fastify: packageVersion('fastify'),
  };
}

/** The commit measured, and the files of src/, chart/ and package.json that differ from it. */
function gitState(): BenchResult['git'] {
  const status = execFileSync('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'src', 'chart', 'package.json'], {
    encoding: 'utf8',
  });
  return {
    commit: firstLine('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']),
    dirty: status
      .split('\n')
      .filter(Boolean)
      .map((l) => l.slice(3)),
  };
}

const SETUP: Record<string, string> = {
  'dify-guard':
    "the real process (node dist/src/main.js with the Node flags of the Dockerfile's CMD, started by " +
    'harness/controlplane/dify-guard.ts), log level info, Events on, PVC cache list+watch synced against the real ' +
    'kube-apiserver before any load; preloaded bench/support/server-probe.mjs (CPU/memory snapshots on SIGUSR2, ' +
    'outgoing request counter)',
  'bare server':
    'bench/bare-server.mjs: node:https, same certificate, TLS floor and keep-alive timeouts, reads the body, ' +
    'answers a constant allowed AdmissionReview',
  'load generator':
    'this process (autocannon 1 worker, and an open-loop paced client on node:https), separate from both servers; ' +
    'the machine has 2 cores, so generator and server each get about one',
  'control plane':
    'harness/controlplane/harness.ts: etcd (--unsafe-no-fsync) + kube-apiserver on loopback, RBAC, audit log in ' +
    'blocking mode (Metadata level for writes)',
};

/** The set-up as run: the fixed description, the image's Node flags, and any experiment's flags and env. */
function setupOf(): Record<string, string> {
  const setup: Record<string, string> = {
    ...SETUP,
    "dify-guard Node options (the image's CMD)": imageNodeFlags().join(' ') || '(none)',
  };
  if (args['guard-node-options'])
    setup['dify-guard extra Node options (experiment)'] = String(args['guard-node-options']);
  if (args['guard-env']?.length) setup['dify-guard extra env (experiment)'] = args['guard-env'].join(' ');
  return setup;
}

/** The result as known before any server starts: the machine, the versions, the in-process steps. */
function newResult(micro: BenchResult['micro'], loadAverageAtStart: number[]): BenchResult {
  return {
    schema: 1,
    startedAt: started.toISOString(),
    finishedAt: '',
    durationSeconds: 0,
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    quick,
    machine: {
      nproc: cpus().length,
      cpuModel: cpuModel(),
      memoryGiB: totalmem() / 1024 ** 3,
      kernel: release(),
      loadAverageAtStart,
      loadAverageAtEnd: [],
    },
    versions: toolVersions(),
    git: gitState(),
    setup: setupOf(),
    micro,
    targets: [],
  };
}

interface Servers {
  guard: DifyGuard;
  guardProbe: ServerProbe;
  bare?: Awaited<ReturnType<typeof startBare>>;
  /** dify-guard first, then the bare server. */
  targets: ServerTarget[];
}

/** The fixtures' Secret lives in namespace dify of release dify: its PVC exists, so a password change is denied. */
async function createReleasePvc(cp: ControlPlane): Promise<void> {
  const rest = cp.rest();
  await rest.create(paths.namespaces, { metadata: { name: 'dify' } });
  await rest.create(paths.pvcs('dify'), pvcManifest(expandName(contract.names.postgresqlPvc, RELEASE)));
}

/** dify-guard (PVC cache synced) and the bare server, each with its probe; `servers` is filled as they start. */
async function startServers(cp: ControlPlane, servers: Partial<Servers>): Promise<Servers> {
  const guardProbeFile = join(cp.dir, 'probe-dify-guard.json');
  const guard = await startGuard(cp, guardKubeconfig(cp), guardProbeFile);
  servers.guard = guard;
  const guardProbe = new ServerProbe('dify-guard', () => guard.process.pid, guardProbeFile);
  log(`dify-guard ready (pid ${guard.process.pid}, https://127.0.0.1:${guard.port}); PVC cache synced`);
  const bareProbeFile = join(cp.dir, 'probe-bare.json');
  const bare = await startBare(cp, guard, bareProbeFile);
  servers.bare = bare;
  const targets: ServerTarget[] = [
    {
      name: 'dify-guard',
      port: guard.port,
      caFile: guard.certs.caFile,
      probe: guardProbe,
      healthPort: guard.healthPort,
    },
    {
      name: 'bare',
      port: bare.port,
      caFile: guard.certs.caFile,
      probe: new ServerProbe('bare', () => bare.process.pid, bareProbeFile),
    },
  ];
  return { guard, guardProbe, bare, targets };
}

async function stopServers(servers: Partial<Servers>): Promise<void> {
  if (servers.bare) {
    await servers.bare.process.stop(5_000);
    servers.bare.release();
  }
  if (servers.guard) await servers.guard.stop();
}

/** dify-guard's CPU profile under each payload, and the bare server's under the pod payload for reference. */
async function profiles(targets: ServerTarget[]): Promise<NonNullable<BenchResult['profiles']>> {
  const profileDir = join(repoRoot, '.cache/bench-profiles', started.toISOString().replace(/[:.]/g, '-'));
  const [guard, bare] = targets as [ServerTarget, ServerTarget];
  const result: NonNullable<BenchResult['profiles']> = {};
  for (const payload of PAYLOADS) result[`dify-guard ${payload.id}`] = await profileServer(guard, payload, profileDir);
  // The reference: what the same load costs the bare server (TLS, HTTP, socket writes).
  const podPayload = PAYLOADS[0] as (typeof PAYLOADS)[number];
  result[`bare ${podPayload.id}`] = await profileServer(bare, podPayload, profileDir);
  return result;
}

/** The views and profiles the options ask for, in order, into `result`. */
async function measure(cp: ControlPlane, servers: Servers, result: BenchResult): Promise<void> {
  if (!args['skip-server-view']) {
    const options = {
      warmupSeconds,
      seconds,
      connections: Number(args.connections),
      rate: Number(args.rate),
      pacedSockets: 16,
      autocannonRate: !args['no-autocannon-rate'],
    };
    result.serverView = await runServerView(servers.targets, options, log);
  }
  if (!args['skip-apiserver-view']) {
    const { guard, guardProbe } = servers;
    const context = { cp, guard, guardProbe, guardUser: GUARD_USER, rest: cp.rest() };
    result.apiServerView = await runApiServerView(context, { n, warmup: quick ? 5 : 20 }, log);
  }
  if (!args['no-profile']) result.profiles = await profiles(servers.targets);
}

/** bench/results/<time>.json and latest.json, the terminal table, and with --write-md BENCHMARKS.md's block. */
function writeResults(result: BenchResult): void {
  mkdirSync(resultsDir, { recursive: true });
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  const file = join(resultsDir, `${stamp}${quick ? '-quick' : ''}.json`);
  const text = `${JSON.stringify(result, null, 2)}\n`;
  writeFileSync(file, text);
  writeFileSync(join(resultsDir, 'latest.json'), text);
  process.stdout.write(
    `${terminalReport(result)}\n\nresults: ${relative(repoRoot, file)} (and bench/results/latest.json)\n`,
  );
  if (args['write-md']) {
    const mdFile = join(repoRoot, 'BENCHMARKS.md');
    const current = existsSync(mdFile) ? readFileSync(mdFile, 'utf8') : '# Benchmarks\n';
    writeFileSync(mdFile, withGeneratedBlock(current, markdownReport(result, relative(repoRoot, file))));
    process.stdout.write('BENCHMARKS.md: generated block refreshed\n');
  }
}

async function main(): Promise<void> {
  if (args.help) return void process.stdout.write(`${HELP}\n`);
  if (!existsSync(join(repoRoot, 'dist/src/main.js')))
    throw new Error('dist/src/main.js is missing: `npm run bench` builds it (npm run build)');
  const loadAverageAtStart = loadavg();
  const mode = quick ? 'QUICK run (development numbers)' : 'full run';
  log(`load average ${loadAverageAtStart.map((v) => v.toFixed(2)).join(' ')}; ${mode}`);
  // First, while nothing else of the bench runs: the decisions' own cost, in this process.
  const micro = runMicro(quick ? 500 : 2000);
  log(`in-process steps: ${micro.map((m) => `${m.step.trim()} ${m.us} us`).join('; ')}`);
  const result = newResult(micro, loadAverageAtStart);
  const cp = await ControlPlane.start({ name: 'bench' });
  const servers: Partial<Servers> = {};
  try {
    await createReleasePvc(cp);
    await measure(cp, await startServers(cp, servers), result);
  } finally {
    await stopServers(servers);
    await cp.stop();
  }
  result.machine.loadAverageAtEnd = loadavg();
  result.finishedAt = new Date().toISOString();
  result.durationSeconds = (Date.now() - started.getTime()) / 1000;
  result.targets = checkTargets(result);
  writeResults(result);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
