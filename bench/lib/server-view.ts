// Server view: the real dify-guard process (dist/src/main.js, started by the control-plane
// harness, its PVC cache synced against the real API server) and a bare Node HTTPS server, loaded
// in turn with the same AdmissionReview bodies from test/fixtures/.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { contract } from '../../src/contract.js';
import { loadReview } from '../../harness/fixtures.js';
import { scrapeBuckets, serverSideLatency, type ServerSideLatency } from './guard-metrics.js';
import {
  autocannonRate,
  closedLoop,
  negotiatedProtocol,
  paced,
  postOnce,
  sameAnswerAs,
  type Endpoint,
  type LoadResult,
} from './load.js';
import { classifyCalls, deltaOf, type ServerProbe } from './probe.js';

export interface Payload {
  id: string;
  description: string;
  fixture: string;
  path: string;
  /** What dify-guard must answer (checked once before the load): a problem, or undefined. */
  check(response: ReviewResponse): string | undefined;
}

interface ReviewResponse {
  response?: { allowed?: boolean; patch?: string; status?: { code?: number } };
}

export const PAYLOADS: Payload[] = [
  {
    id: 'pod-create-mutation',
    fixture: 'pod-api-literal',
    path: contract.webhook.mutatePodsPath,
    description:
      'Dify api pod CREATE needing mutation (literal passwords, MIGRATION_ENABLED, a sidecar and an init container): ' +
      'allowed with a JSONPatch',
    check: (r) =>
      r.response?.allowed === true && typeof r.response.patch === 'string'
        ? undefined
        : 'expected allowed with a patch',
  },
  {
    id: 'secret-password-change-denied',
    fixture: 'secret-postgresql-update-password',
    path: contract.webhook.validateSecretsPath,
    description:
      'PostgreSQL Secret UPDATE changing the password while the PVC exists: denied (audit log line + Warning Event)',
    check: (r) =>
      r.response?.allowed === false && r.response.status?.code === 403 ? undefined : 'expected a 403 denial',
  },
  {
    id: 'secret-unchanged-allowed',
    fixture: 'secret-postgresql-update-unchanged',
    path: contract.webhook.validateSecretsPath,
    description: 'PostgreSQL Secret UPDATE that leaves the password alone: allowed, no lookup',
    check: (r) =>
      r.response?.allowed === true && r.response.patch === undefined ? undefined : 'expected allowed without a patch',
  },
];

export interface ServerTarget {
  name: 'dify-guard' | 'bare';
  port: number;
  caFile: string;
  probe: ServerProbe;
  /** dify-guard's plain-HTTP health port, for its own request-duration histogram. */
  healthPort?: number;
}

export interface ServerViewOptions {
  warmupSeconds: number;
  seconds: number;
  connections: number;
  rate: number;
  pacedSockets: number;
  /** Also run autocannon's own overallRate mode (bursty; for reference). */
  autocannonRate: boolean;
}

export interface ServerUsage {
  /** CPU of the server process over the run (process.cpuUsage deltas), in cores. */
  cores: number;
  cpuUsPerRequest: number;
  peakRssBytes: number;
  rssAtEndBytes: number;
  /** process.memoryUsage() of the server right after the run. */
  memoryAfter: ReturnType<typeof deltaOf>['memoryAfter'];
  /** Outgoing HTTP requests of the server during the run (and 0.5 s after), per admission request. */
  apiCalls: ReturnType<typeof classifyCalls> & {
    perRequest: number;
    lookupsPerRequest: number;
    eventWritesPerRequest: number;
    byPath: Record<string, number>;
  };
}

export interface MeasuredRun {
  load: LoadResult;
  server: ServerUsage;
  /** dify-guard only: its own histogram of receive-to-answer time over the run. */
  serverSideLatency?: ServerSideLatency;
}

export interface PayloadResult {
  payload: string;
  description: string;
  bodyBytes: number;
  responseBytes: Record<ServerTarget['name'], number>;
  runs: Record<ServerTarget['name'], { connections: MeasuredRun; paced: MeasuredRun; autocannonRate?: MeasuredRun }>;
  /** dify-guard / bare throughput, fixed connections. */
  throughputRatio: number;
}

export interface ServerViewResult {
  options: ServerViewOptions;
  alpn: Record<ServerTarget['name'], string | false>;
  payloads: PayloadResult[];
  /** Each server idle: before any load, and 5 s after the last run (VmRSS, VmHWM from /proc; V8 heap from the probe). */
  memoryIdle: Record<ServerTarget['name'], { before: IdleMemory; after: IdleMemory }>;
}

export interface IdleMemory {
  rssBytes: number;
  hwmBytes: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
}

async function idleMemory(target: ServerTarget): Promise<IdleMemory> {
  const snapshot = await target.probe.snapshot();
  return {
    ...target.probe.memoryFromProc(),
    heapUsedBytes: snapshot.heapUsedBytes,
    heapTotalBytes: snapshot.heapTotalBytes,
  };
}

const endpointOf = (target: ServerTarget, path: string): Endpoint => ({
  host: '127.0.0.1',
  port: target.port,
  path,
  ca: readFileSync(target.caFile),
});

async function measured(target: ServerTarget, route: string, load: () => Promise<LoadResult>): Promise<MeasuredRun> {
  await target.probe.settle();
  const bucketsBefore = target.healthPort ? await scrapeBuckets(target.healthPort, route) : undefined;
  const before = await target.probe.snapshot();
  const stopSampling = target.probe.sampleRss(100);
  const result = await load();
  const rss = stopSampling();
  // Events queued by the last denials are sent within a few hundred ms: count them with the run.
  await sleep(500);
  const delta = deltaOf(before, await target.probe.snapshot());
  const bucketsAfter = target.healthPort ? await scrapeBuckets(target.healthPort, route) : undefined;
  const calls = classifyCalls(delta.calls);
  const perRequest = (n: number): number => (result.requests > 0 ? n / result.requests : 0);
  return {
    load: result,
    server: {
      cores: delta.cpuSeconds / result.seconds,
      cpuUsPerRequest: result.requests > 0 ? (delta.cpuSeconds * 1e6) / result.requests : 0,
      peakRssBytes: rss.peakRssBytes,
      rssAtEndBytes: rss.lastRssBytes,
      memoryAfter: delta.memoryAfter,
      apiCalls: {
        ...calls,
        perRequest: perRequest(calls.total),
        lookupsPerRequest: perRequest(calls.lookups),
        eventWritesPerRequest: perRequest(calls.eventWrites),
        byPath: delta.calls,
      },
    },
    ...(bucketsBefore && bucketsAfter ? { serverSideLatency: serverSideLatency(bucketsBefore, bucketsAfter) } : {}),
  };
}

const ms = (us: number): string => (us / 1000).toFixed(2);

/** One POST first: the answer every load response is compared with, and dify-guard's checked against the payload. */
async function firstAnswer(target: ServerTarget, endpoint: Endpoint, payload: Payload, body: string): Promise<string> {
  const first = await postOnce(endpoint, body);
  if (first.status !== 200) throw new Error(`${target.name} ${payload.id}: HTTP ${first.status}`);
  if (target.name === 'dify-guard') {
    const problem = payload.check(JSON.parse(first.text) as ReviewResponse);
    if (problem) throw new Error(`dify-guard ${payload.id}: ${problem}; got ${first.text.slice(0, 300)}`);
  }
  return first.text;
}

type TargetRuns = PayloadResult['runs'][ServerTarget['name']];

/** Warm-up, then the measured runs of one payload against one server: fixed connections, paced, autocannon's rate. */
async function loadTarget(
  target: ServerTarget,
  sent: { payload: Payload; body: string; first: string },
  options: ServerViewOptions,
  log: (line: string) => void,
): Promise<TargetRuns> {
  const { payload, body, first } = sent;
  const sending = { endpoint: endpointOf(target, payload.path), body, sameAnswer: sameAnswerAs(first) };
  const { connections, seconds, rate } = options;
  log(`${payload.id} -> ${target.name}: warm-up ${options.warmupSeconds} s`);
  await closedLoop(sending, { connections, seconds: options.warmupSeconds });
  const fixed = await measured(target, payload.path, () => closedLoop(sending, { connections, seconds }));
  log(
    `  ${connections} connections: ${Math.round(fixed.load.throughputRps)} req/s, p99 ${ms(fixed.load.latency.p99Us)} ms, ` +
      `server ${fixed.server.cores.toFixed(2)} cores`,
  );
  const pacedRun = await measured(target, payload.path, () =>
    paced(sending, { rate, seconds, sockets: options.pacedSockets }),
  );
  const serverSide = pacedRun.serverSideLatency ? `, server-side p99 ${pacedRun.serverSideLatency.p99Ms} ms` : '';
  log(
    `  paced ${rate} req/s: p99 ${ms(pacedRun.load.latency.p99Us)} ms ` +
      `(schedule lag p99 ${ms(pacedRun.load.scheduleLagUs?.p99 ?? 0)} ms), server ${pacedRun.server.cores.toFixed(2)} cores${serverSide}`,
  );
  const runs: TargetRuns = { connections: fixed, paced: pacedRun };
  if (options.autocannonRate) {
    runs.autocannonRate = await measured(target, payload.path, () =>
      autocannonRate(sending, { connections, seconds, rate }),
    );
    log(`  autocannon overallRate ${rate}: p99 ${ms(runs.autocannonRate.load.latency.p99Us)} ms`);
  }
  return runs;
}

/** One payload against every server in turn. */
async function runPayload(
  payload: Payload,
  targets: ServerTarget[],
  options: ServerViewOptions,
  log: (line: string) => void,
): Promise<PayloadResult> {
  const body = JSON.stringify(loadReview(payload.fixture));
  const result: PayloadResult = {
    payload: payload.id,
    description: payload.description,
    bodyBytes: Buffer.byteLength(body),
    responseBytes: {} as PayloadResult['responseBytes'],
    runs: {} as PayloadResult['runs'],
    throughputRatio: 0,
  };
  for (const target of targets) {
    const first = await firstAnswer(target, endpointOf(target, payload.path), payload, body);
    result.responseBytes[target.name] = Buffer.byteLength(first);
    // The other server may still be sending Events queued by the last run: let it finish first.
    for (const other of targets) await other.probe.settle();
    result.runs[target.name] = await loadTarget(target, { payload, body, first }, options, log);
  }
  const guard = result.runs['dify-guard']?.connections.load.throughputRps ?? 0;
  const bare = result.runs.bare?.connections.load.throughputRps ?? 0;
  result.throughputRatio = bare > 0 ? guard / bare : 0;
  return result;
}

async function idleMemories(targets: ServerTarget[]): Promise<Record<ServerTarget['name'], IdleMemory>> {
  const idle = {} as Record<ServerTarget['name'], IdleMemory>;
  for (const target of targets) idle[target.name] = await idleMemory(target);
  return idle;
}

export async function runServerView(
  targets: ServerTarget[],
  options: ServerViewOptions,
  log: (line: string) => void,
): Promise<ServerViewResult> {
  const alpn = {} as ServerViewResult['alpn'];
  for (const target of targets) alpn[target.name] = await negotiatedProtocol(endpointOf(target, '/'));
  const offered = targets.map((t) => `${t.name}: ${alpn[t.name] || 'no ALPN (HTTP/1.1 only)'}`);
  log(`ALPN offered h2,http/1.1 -> ${offered.join(', ')}`);
  const idleBefore = await idleMemories(targets);
  const payloads: PayloadResult[] = [];
  for (const payload of PAYLOADS) payloads.push(await runPayload(payload, targets, options, log));
  await sleep(5_000);
  const idleAfter = await idleMemories(targets);
  const memoryIdle = {} as ServerViewResult['memoryIdle'];
  for (const target of targets)
    memoryIdle[target.name] = { before: idleBefore[target.name], after: idleAfter[target.name] };
  const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);
  const rss = targets.map(
    (t) => `${t.name} ${mib(memoryIdle[t.name].before.rssBytes)}/${mib(memoryIdle[t.name].after.rssBytes)} MiB`,
  );
  log(`idle RSS before/after: ${rss.join(', ')}`);
  return { options, alpn, payloads, memoryIdle };
}
