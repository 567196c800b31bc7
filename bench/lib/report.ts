// The bench's outputs: the targets of the issue checked against a result, a terminal table, and
// the generated block of BENCHMARKS.md (between two markers; the prose around it is written by hand).
import type { ApiServerViewResult, Mode } from './apiserver-view.js';
import type { MicroResult } from './micro.js';
import type { ProfileSummary } from './profile.js';
import type { MeasuredRun, ServerViewResult } from './server-view.js';
import { ms } from './stats.js';

export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  memoryGiB: number;
  kernel: string;
  loadAverageAtStart: number[];
  loadAverageAtEnd: number[];
}

export interface BenchResult {
  schema: 1;
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  command: string;
  quick: boolean;
  machine: MachineInfo;
  versions: Record<string, string>;
  git: { commit: string; dirty: string[] };
  setup: Record<string, string>;
  serverView?: ServerViewResult;
  apiServerView?: ApiServerViewResult;
  profiles?: Record<string, ProfileSummary>;
  /** In-process cost of each step, no network (bench/lib/micro.ts). */
  micro: MicroResult[];
  targets: TargetCheck[];
}

export interface TargetCheck {
  target: string;
  limit: string;
  measured: string;
  met: boolean | null;
}

const MiB = 1024 * 1024;
const fmtMs = (us: number): string => ms(us).toFixed(2);
const fmtMiB = (bytes: number): string => (bytes / MiB).toFixed(1);

/** The sum of `count` over dify-guard's two measured runs (fixed connections and paced) of every payload. */
const guardRunsSum = (sv: ServerViewResult, count: (run: MeasuredRun) => number): number =>
  sv.payloads.reduce((sum, p) => sum + count(p.runs['dify-guard'].connections) + count(p.runs['dify-guard'].paced), 0);

/** Throughput ratio, p99 at the paced rate, steady RSS and API reads, from the server view. */
function serverViewTargets(sv: ServerViewResult): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const pod = sv.payloads.find((p) => p.payload === 'pod-create-mutation');
  if (pod) {
    checks.push({
      target: 'dify-guard throughput on the pod-mutation payload vs bare',
      limit: '>= 70 %',
      measured: `${(pod.throughputRatio * 100).toFixed(1)} %`,
      met: pod.throughputRatio >= 0.7,
    });
  }
  for (const p of sv.payloads) {
    const p99 = p.runs['dify-guard'].paced.load.latency.p99Us;
    checks.push({
      target: `p99 at ${sv.options.rate} req/s, ${p.payload}`,
      limit: '<= 5 ms',
      measured: `${fmtMs(p99)} ms`,
      met: p99 <= 5000,
    });
  }
  const steady = Math.max(...sv.payloads.map((p) => p.runs['dify-guard'].paced.server.rssAtEndBytes));
  checks.push({
    target: `dify-guard steady RSS (end of each ${sv.options.rate} req/s run, max)`,
    limit: '<= 100 MiB',
    measured: `${fmtMiB(steady)} MiB`,
    met: steady <= 100 * MiB,
  });
  const lookups = guardRunsSum(sv, (run) => run.server.apiCalls.lookups);
  const requests = guardRunsSum(sv, (run) => run.load.requests);
  checks.push({
    target: 'API reads per admission request, cache synced (server view)',
    limit: '0',
    measured: `${lookups} in ${requests} requests`,
    met: lookups === 0,
  });
  return checks;
}

/** Every server-view response as the first one (sameAnswerAs in load.ts): no error, timeout, non-2xx or mismatch. */
function responsesTarget(sv: ServerViewResult): TargetCheck {
  const runs = sv.payloads.flatMap((p) =>
    Object.values(p.runs).flatMap((r) => [r.connections, r.paced, ...(r.autocannonRate ? [r.autocannonRate] : [])]),
  );
  const bad = runs.reduce((sum, r) => sum + r.load.errors + r.load.timeouts + r.load.non2xx + r.load.mismatches, 0);
  const total = runs.reduce((sum, r) => sum + r.load.requests, 0);
  return {
    target:
      'server view: every response as first checked (no error, timeout, non-2xx or other answer: uid, allowed, patch, code, reason)',
    limit: '0 bad',
    measured: `${bad} bad of ${total}`,
    met: bad === 0,
  };
}

/** Expected statuses, API reads and the added p50 of a pod create, from the API-server view. */
function apiServerViewTargets(av: ApiServerViewResult): TargetCheck[] {
  const unexpected = av.podCreate.unexpected + av.secretPasswordChange.unexpected;
  const lookups = av.difyGuardApiCalls.lookups;
  const guard = av.podCreate.modes['dify-guard'].addedP50Us;
  const policy = av.podCreate.modes.policy.addedP50Us;
  const ratio = policy > 0 ? `${(guard / policy).toFixed(1)}x` : 'policy adds nothing measurable';
  return [
    {
      target:
        "API-server view: expected statuses (201 pods; 200 / 403 / 403 password changes); policy mutation = dify-guard's",
      limit: '0 unexpected, same env',
      measured: `${unexpected} unexpected, ${av.podMutationEquivalent.equal ? 'same env' : 'env differs'}`,
      met: unexpected === 0 && av.podMutationEquivalent.equal,
    },
    {
      target: 'API reads per admission request, cache synced (API-server view)',
      limit: '0',
      measured: `${lookups} in ${av.difyGuardApiCalls.admissionRequests} requests`,
      met: lookups === 0,
    },
    {
      target: 'added p50 per pod create through the API server, dify-guard vs none',
      limit: '<= 3 ms',
      measured: `${fmtMs(guard)} ms`,
      met: guard <= 3000,
    },
    {
      target: 'added p50 per pod create, dify-guard vs in-process policy',
      limit: '<= 2x policy',
      measured: `${fmtMs(guard)} ms vs ${fmtMs(policy)} ms (${ratio})`,
      met: policy > 0 ? guard <= 2 * policy : guard <= 0,
    },
  ];
}

export function checkTargets(result: Pick<BenchResult, 'serverView' | 'apiServerView'>): TargetCheck[] {
  const sv = result.serverView;
  const av = result.apiServerView;
  return [...(sv ? [...serverViewTargets(sv), responsesTarget(sv)] : []), ...(av ? apiServerViewTargets(av) : [])];
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, col) => Math.max(...rows.map((r) => (r[col] ?? '').length))) ?? [];
  return rows
    .map((r, i) => {
      const line = r
        .map((cell, col) => (col === 0 ? cell.padEnd(widths[col] ?? 0) : cell.padStart(widths[col] ?? 0)))
        .join('  ');
      return i === 0 ? `${line}\n${widths.map((w) => '-'.repeat(w)).join('  ')}` : line;
    })
    .join('\n');
}

function markdownTable(rows: string[][]): string {
  const [head, ...body] = rows;
  if (!head) return '';
  return [
    `| ${head.join(' | ')} |`,
    `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...body.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

function serverRows(sv: ServerViewResult): string[][] {
  const rows = [
    [
      'payload',
      'server',
      'req/s',
      'p50 ms',
      'p99 ms',
      'p99.9 ms',
      'CPU cores',
      'CPU us/req',
      'peak RSS MiB',
      `p50 @${sv.options.rate}/s ms`,
      `p99 @${sv.options.rate}/s ms`,
      `p99.9 @${sv.options.rate}/s ms`,
      'in-server p99 ms',
      `RSS @${sv.options.rate}/s MiB`,
      'ratio',
    ],
  ];
  for (const p of sv.payloads) {
    for (const name of ['dify-guard', 'bare'] as const) {
      const run = p.runs[name];
      rows.push([
        name === 'dify-guard' ? p.payload : '',
        name,
        Math.round(run.connections.load.throughputRps).toString(),
        fmtMs(run.connections.load.latency.p50Us),
        fmtMs(run.connections.load.latency.p99Us),
        fmtMs(run.connections.load.latency.p999Us),
        run.connections.server.cores.toFixed(2),
        Math.round(run.connections.server.cpuUsPerRequest).toString(),
        fmtMiB(Math.max(run.connections.server.peakRssBytes, run.paced.server.peakRssBytes)),
        fmtMs(run.paced.load.latency.p50Us),
        fmtMs(run.paced.load.latency.p99Us),
        fmtMs(run.paced.load.latency.p999Us),
        run.paced.serverSideLatency ? run.paced.serverSideLatency.p99Ms.toFixed(2) : '-',
        fmtMiB(run.paced.server.rssAtEndBytes),
        name === 'dify-guard' ? `${(p.throughputRatio * 100).toFixed(1)} %` : '',
      ]);
    }
  }
  return rows;
}

function idleMemoryLine(sv: ServerViewResult): string {
  const ofServer = ([name, m]: [string, ServerViewResult['memoryIdle']['bare']]): string =>
    `${name} RSS ${fmtMiB(m.before.rssBytes)} -> ${fmtMiB(m.after.rssBytes)} MiB ` +
    `(V8 heap used ${fmtMiB(m.before.heapUsedBytes)} -> ${fmtMiB(m.after.heapUsedBytes)} MiB, ` +
    `lifetime peak RSS ${fmtMiB(m.after.hwmBytes)} MiB)`;
  return `Idle memory, before any load -> 5 s after the last run: ${Object.entries(sv.memoryIdle).map(ofServer).join('; ')}.`;
}

function apiRows(av: ApiServerViewResult): string[][] {
  const rows = [['request', 'admission', 'p50 ms', 'p90 ms', 'p99 ms', 'added p50 ms', 'added p99 ms', 'statuses']];
  const label: Record<Mode, string> = {
    none: 'none',
    'dify-guard': 'dify-guard webhook',
    policy: 'in-process policy (MAP/VAP)',
  };
  for (const [name, kind] of [
    ['pod create', av.podCreate],
    ['password change', av.secretPasswordChange],
  ] as const) {
    for (const mode of ['none', 'dify-guard', 'policy'] as const) {
      const m = kind.modes[mode];
      rows.push([
        mode === 'none' ? name : '',
        label[mode],
        fmtMs(m.latency.p50Us),
        fmtMs(m.latency.p90Us),
        fmtMs(m.latency.p99Us),
        mode === 'none' ? '' : fmtMs(m.addedP50Us),
        mode === 'none' ? '' : fmtMs(m.addedP99Us),
        Object.entries(m.statuses)
          .map(([s, c]) => `${s}x${c}`)
          .join(' '),
      ]);
    }
  }
  return rows;
}

function targetRows(checks: TargetCheck[]): string[][] {
  return [
    ['target', 'limit', 'measured', 'met'],
    ...checks.map((c) => [c.target, c.limit, c.measured, c.met === null ? '-' : c.met ? 'yes' : 'NO']),
  ];
}

export function terminalReport(result: BenchResult): string {
  const parts: string[] = [];
  if (result.serverView) {
    const { connections, seconds, rate } = result.serverView.options;
    parts.push(
      `Server view (${connections} keep-alive TLS connections for ${seconds} s; then open loop at ${rate} req/s)`,
    );
    parts.push(table(serverRows(result.serverView)));
    parts.push(idleMemoryLine(result.serverView));
  }
  if (result.apiServerView) {
    parts.push(`\nAPI-server view (N=${result.apiServerView.options.n} per namespace, interleaved)`);
    parts.push(table(apiRows(result.apiServerView)));
  }
  parts.push('\nTargets');
  parts.push(table(targetRows(result.targets)));
  return parts.join('\n');
}

const loads = (averages: number[]): string => averages.map((v) => v.toFixed(2)).join(' / ');

/** The run, the machine, the versions, the code and the set-up. */
function headerLines(result: BenchResult, resultFile: string): string[] {
  const m = result.machine;
  const dirty = result.git.dirty.length ? ` with uncommitted changes in ${result.git.dirty.join(', ')}` : '';
  return [
    `Run ${result.startedAt} (${Math.round(result.durationSeconds)} s), result file \`${resultFile}\`.`,
    '',
    `- Command: \`${result.command}\``,
    `- Machine: ${m.nproc} cores (${m.cpuModel}), ${m.memoryGiB.toFixed(1)} GiB RAM, Linux ${m.kernel}; ` +
      `load average (1/5/15 min) ${loads(m.loadAverageAtStart)} at start, ${loads(m.loadAverageAtEnd)} at end`,
    `- Versions: ${Object.entries(result.versions)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    `- Code: ${result.git.commit}${dirty}`,
    ...Object.entries(result.setup).map(([k, v]) => `- ${k}: ${v}`),
    '',
  ];
}

/** How the server view loads the servers, and the ALPN they chose. */
function serverMethod(sv: ServerViewResult): string {
  const { connections, seconds, warmupSeconds, rate, pacedSockets } = sv.options;
  const alpn = Object.entries(sv.alpn)
    .map(([k, v]) => `${k} ${v || 'none, HTTP/1.1 only'}`)
    .join(', ');
  return (
    `Fixed connections: autocannon, ${connections} keep-alive TLS connections, ${seconds} s after ${warmupSeconds} s ` +
    `of warm-up. "@${rate}/s": open loop, ${rate} req/s for ${seconds} s over up to ${pacedSockets} keep-alive ` +
    'connections. CPU from process.cpuUsage() of the server process; RSS from /proc (VmRSS, sampled every 100 ms). ' +
    `ALPN (h2 offered): ${alpn}.`
  );
}

function autocannonRateLine(sv: ServerViewResult): string {
  const p99 = (run: MeasuredRun | undefined): string => fmtMs(run?.load.latency.p99Us ?? 0);
  const perPayload = sv.payloads.map(
    (p) =>
      `${p.payload} dify-guard ${p99(p.runs['dify-guard'].autocannonRate)} / bare ${p99(p.runs.bare.autocannonRate)}`,
  );
  return (
    `autocannon's own overallRate=${sv.options.rate} (bursts each second's budget; reference only), ` +
    `p99 ms: ${perPayload.join('; ')}.`
  );
}

function serverApiCallsLine(sv: ServerViewResult): string {
  const perPayload = sv.payloads.map((p) => {
    const c = p.runs['dify-guard'].connections.server.apiCalls;
    const r = p.runs['dify-guard'].paced.server.apiCalls;
    const requests = p.runs['dify-guard'].connections.load.requests + p.runs['dify-guard'].paced.load.requests;
    return (
      `${p.payload}: ${c.lookups + r.lookups} reads, ${c.eventWrites + r.eventWrites} Event writes, ` +
      `${c.cacheListWatch + r.cacheListWatch} cache list/watch, ${c.other + r.other} other in ${requests} requests`
    );
  });
  return `dify-guard's outgoing API requests during the server-view runs: ${perPayload.join('; ')}.`;
}

function serverSection(sv: ServerViewResult): string[] {
  return [
    '### Server view',
    '',
    serverMethod(sv),
    '',
    markdownTable(serverRows(sv)),
    '',
    idleMemoryLine(sv),
    '',
    ...(sv.options.autocannonRate ? [autocannonRateLine(sv), ''] : []),
    serverApiCallsLine(sv),
    '',
  ];
}

const countsOf = (counts: Record<string, number>): string =>
  Object.entries(counts)
    .map(([k, v]) => `${k} x${v}`)
    .join(', ');

function apiMethod(av: ApiServerViewResult): string {
  const equivalence = av.podMutationEquivalent.equal
    ? "yields the same env entries as dify-guard's (order aside)"
    : `differs from dify-guard's: ${av.podMutationEquivalent.differences.join(', ')}`;
  return (
    `N=${av.options.n} requests per namespace and kind, sequential, the three namespaces interleaved (after ` +
    `${av.options.warmup} warm-up requests each). Latency is the client's, per request. The policy namespace uses ` +
    `${av.policyKinds.join(', ')}; its pod mutation ${equivalence}.`
  );
}

function apiCallsLines(av: ApiServerViewResult): string[] {
  const calls = av.difyGuardApiCalls;
  const webhookCalls = Object.entries(av.apiServerWebhookMetrics)
    .map(([k, v]) => `${k} ${v.calls} calls, mean ${v.meanMs.toFixed(2)} ms`)
    .join('; ');
  const byPath = Object.keys(calls.byPath).length ? ` (${countsOf(calls.byPath)})` : '';
  return [
    `API server's own measure of its webhook calls: ${webhookCalls || 'none'}.`,
    `dify-guard's outgoing requests over the ${calls.admissionRequests} timed admission requests: ${calls.lookups} ` +
      `reads (${calls.lookupsPerAdmission} per request), ${calls.eventWrites} Event writes ` +
      `(${calls.eventWritesPerDenial.toFixed(2)} per denial), ${calls.cacheListWatch} cache list/watch, ` +
      `${calls.other} other${byPath}. Audit log, writes by dify-guard's user over the whole run (both views): ` +
      `${countsOf(av.auditedWritesByDifyGuard) || 'none'}.`,
  ];
}

function apiSection(av: ApiServerViewResult): string[] {
  return ['### API-server view', '', apiMethod(av), '', markdownTable(apiRows(av)), '', ...apiCallsLines(av), ''];
}

function microSection(micro: MicroResult[]): string[] {
  const rows = [['step', 'us'], ...micro.map((m) => [m.step.replace(/^ +/, '&nbsp;&nbsp;'), m.us.toFixed(1)])];
  return ['### In-process cost of each step (no network; best of 5 rounds)', '', markdownTable(rows), ''];
}

/** Frames of the event loop itself, left out of the inclusive list. */
const LOOP_FRAMES = /^(processTicksAndRejections|runMicrotasks|emit|listOnTimeout|processTimers|\(anonymous\))$/;

function profileLines(payload: string, p: ProfileSummary): string[] {
  const perRequest = (e: { usPerRequest?: number }): string =>
    e.usPerRequest !== undefined ? `, ${e.usPerRequest} us/req` : '';
  const byArea = p.byArea.slice(0, 10).map((a) => `${a.name} ${a.pct} %${perRequest(a)}`);
  const self = p.topSelf
    .slice(0, 10)
    .map((e) => `\`${e.name}\`${e.where ? ` (${e.where})` : ''} ${e.pct} %${perRequest(e)}`);
  const inclusive = p.topInclusive
    .filter((e) => !LOOP_FRAMES.test(e.name))
    .slice(0, 10)
    .map((e) => `\`${e.name}\` (${e.where}) ${e.pct} %`);
  return [
    `**${payload}**: ${p.requests} requests, main thread busy ${p.busyMs} ms (${p.busyUsPerRequest} us per request).`,
    '',
    `- By area: ${byArea.join(', ')}.`,
    `- Self: ${self.join('; ')}.`,
    `- Inclusive: ${inclusive.join('; ')}.`,
    '',
  ];
}

function profileSection(profiles: Record<string, ProfileSummary>): string[] {
  return [
    '### Where dify-guard spends its CPU (V8 CPU profile of the fixed-connections load, separate runs after the measured ones)',
    '',
    ...Object.entries(profiles).flatMap(([payload, p]) => profileLines(payload, p)),
  ];
}

export function markdownReport(result: BenchResult, resultFile: string): string {
  return [
    ...headerLines(result, resultFile),
    ...(result.serverView ? serverSection(result.serverView) : []),
    ...(result.apiServerView ? apiSection(result.apiServerView) : []),
    '### Targets',
    '',
    markdownTable(targetRows(result.targets)),
    '',
    ...microSection(result.micro),
    ...(result.profiles ? profileSection(result.profiles) : []),
  ].join('\n');
}

export const MD_START = '<!-- bench:results:start -->';
export const MD_END = '<!-- bench:results:end -->';

/** BENCHMARKS.md with its generated block replaced (the block is appended when the markers are missing). */
export function withGeneratedBlock(document: string, block: string): string {
  const generated = `${MD_START}\n${block.trim()}\n${MD_END}`;
  const start = document.indexOf(MD_START);
  const end = document.indexOf(MD_END);
  if (start === -1 || end === -1 || end < start) return `${document.trimEnd()}\n\n${generated}\n`;
  return document.slice(0, start) + generated + document.slice(end + MD_END.length);
}
