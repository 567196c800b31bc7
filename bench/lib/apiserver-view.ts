// API-server view: the same requests through the real kube-apiserver of the test tier, in three
// namespaces that differ only in what admits them: nothing, dify-guard (the chart's webhook
// configurations, with the other two namespaces excluded by the chart's own excludedNamespaces),
// or the in-process policies of ./policies.ts (bound to their namespace only). The modes are
// interleaved request by request (rotating order), so machine load drifts hit all three alike.
import { setTimeout as sleep } from 'node:timers/promises';
import { LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { randomSecret } from '../../harness/controlplane/chart.js';
import type { DifyGuard } from '../../harness/controlplane/dify-guard.js';
import type { ControlPlane } from '../../harness/controlplane/harness.js';
import { registerWebhooks } from '../../harness/controlplane/webhooks.js';
import { waitFor } from '../../harness/commands.js';
import { loadObject } from '../../harness/fixtures.js';
import { paths, type Json, type KubeRest } from '../../harness/kube-rest.js';
import { pvcManifest } from '../../harness/manifests.js';
import { ADMISSION_PATHS, podEnvBinding, podEnvPolicy, secretGuardBinding, secretGuardPolicy } from './policies.js';
import { classifyCalls, deltaOf, type ServerProbe } from './probe.js';
import { summarizeSamples, type LatencySummary } from './stats.js';

export const MODES = ['none', 'dify-guard', 'policy'] as const;
export type Mode = (typeof MODES)[number];

export const NAMESPACES: Record<Mode, string> = {
  none: 'bench-none',
  'dify-guard': 'bench-guard',
  policy: 'bench-policy',
};
const RELEASE = 'dify';
export const POD_FIXTURE = 'pod-api-literal';

export interface ApiServerViewOptions {
  n: number;
  warmup: number;
}

export interface ModeResult {
  latency: LatencySummary;
  /** This mode's percentile minus the no-webhook one, us. */
  addedP50Us: number;
  addedP99Us: number;
  statuses: Record<string, number>;
}

export interface RequestKindResult {
  description: string;
  expectedStatus: Record<Mode, number>;
  modes: Record<Mode, ModeResult>;
  unexpected: number;
}

export interface ApiServerViewResult {
  options: ApiServerViewOptions;
  policyKinds: string[];
  /** The pod as stored after the webhook and after the policy: same env entries (order aside)? */
  podMutationEquivalent: { equal: boolean; differences: string[] };
  podCreate: RequestKindResult;
  secretPasswordChange: RequestKindResult;
  /** What the API server measured for its calls to dify-guard's webhooks during the timed loops. */
  apiServerWebhookMetrics: Record<string, { calls: number; meanMs: number }>;
  /** dify-guard's own outgoing requests during the timed loops. */
  difyGuardApiCalls: ReturnType<typeof classifyCalls> & {
    admissionRequests: number;
    lookupsPerAdmission: number;
    eventWritesPerDenial: number;
    byPath: Record<string, number>;
  };
  /** Writes by dify-guard's user in the API server's audit log over the whole view (reads are not audited by the harness's policy). */
  auditedWritesByDifyGuard: Record<string, number>;
}

const labels = {
  [LABELS.name]: contract.values.difyName,
  [LABELS.instance]: RELEASE,
  [LABELS.component]: contract.components.postgresql,
};
const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');

function postgresqlSecret(namespace: string): Json {
  const password = b64(randomSecret());
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: expandName(contract.names.postgresqlSecret, RELEASE), namespace, labels },
    data: {
      [SECRET_KEYS.postgresPassword]: password,
      [SECRET_KEYS.password]: password,
      [SECRET_KEYS.postgresUsername]: b64('dify'),
      [SECRET_KEYS.postgresDatabase]: b64('dify'),
    },
  };
}

function postgresqlPvc(namespace: string): Json {
  return pvcManifest(expandName(contract.names.postgresqlPvc, RELEASE), { namespace, labels });
}

function benchPod(): Json {
  const pod = loadObject(POD_FIXTURE) as Json;
  delete (pod.metadata as Json).namespace;
  return pod;
}

async function createOk(rest: KubeRest, path: string, body: Json): Promise<void> {
  const res = await rest.create(path, body);
  if (res.status !== 201 && res.status !== 409)
    throw new Error(`POST ${path}: ${res.status} ${String(res.body.message)}`);
}

/** The password-change merge patch: one of two new values, so that with no admission each attempt really changes it. */
function passwordPatches(): [string, string] {
  const make = (): string => {
    const value = b64(randomSecret());
    return JSON.stringify({ data: { [SECRET_KEYS.postgresPassword]: value, [SECRET_KEYS.password]: value } });
  };
  return [make(), make()];
}

function envMap(pod: Json): Record<string, Record<string, string>> {
  const spec = (pod.spec ?? {}) as Json;
  const out: Record<string, Record<string, string>> = {};
  for (const field of ['containers', 'initContainers']) {
    for (const container of (spec[field] as Json[] | undefined) ?? []) {
      const env: Record<string, string> = {};
      for (const entry of (container.env as Json[] | undefined) ?? []) {
        env[String(entry.name)] = canonical(entry.value ?? entry.valueFrom);
      }
      out[`${field}/${String(container.name)}`] = env;
    }
  }
  return out;
}

const canonical = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b)))
      : v,
  );

async function webhookMetrics(rest: KubeRest): Promise<Record<string, { sum: number; count: number }>> {
  const res = await rest.request('GET', '/metrics');
  const text = String(res.body.raw ?? '');
  const out: Record<string, { sum: number; count: number }> = {};
  for (const line of text.split('\n')) {
    const m = /^apiserver_admission_webhook_admission_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const name = /(?:^|,)name="([^"]+)"/.exec(m[2] ?? '')?.[1] ?? '?';
    const entry = (out[name] ??= { sum: 0, count: 0 });
    entry[m[1] as 'sum' | 'count'] += Number(m[3]);
  }
  return out;
}

export interface ApiServerViewContext {
  cp: ControlPlane;
  guard: DifyGuard;
  guardProbe: ServerProbe;
  guardUser: string;
  rest: KubeRest;
}

const POSTGRESQL_SECRET = expandName(contract.names.postgresqlSecret, RELEASE);
const secretPath = (mode: Mode): string => paths.secret(NAMESPACES[mode], POSTGRESQL_SECRET);
const MERGE_PATCH = 'application/merge-patch+json';

/** Each mode's namespace with the release's PostgreSQL PVC and Secret. */
async function prepareNamespaces(rest: KubeRest): Promise<void> {
  for (const mode of MODES) {
    const ns = NAMESPACES[mode];
    await createOk(rest, paths.namespaces, { metadata: { name: ns } });
    await createOk(rest, paths.pvcs(ns), postgresqlPvc(ns));
    await createOk(rest, paths.secrets(ns), postgresqlSecret(ns));
  }
}

/** The chart's webhook configurations (not for the none and policy namespaces) and the in-process policies. */
async function registerAdmission(ctx: ApiServerViewContext): Promise<string[]> {
  const { cp, guard, rest } = ctx;
  await registerWebhooks(cp, guard, {
    values: { webhook: { excludedNamespaces: [NAMESPACES.none, NAMESPACES.policy] } },
  });
  const policyKinds: string[] = [];
  for (const [path, body] of [
    [ADMISSION_PATHS.ValidatingAdmissionPolicy, secretGuardPolicy()],
    [ADMISSION_PATHS.ValidatingAdmissionPolicyBinding, secretGuardBinding(NAMESPACES.policy, RELEASE)],
    [ADMISSION_PATHS.MutatingAdmissionPolicy, podEnvPolicy()],
    [ADMISSION_PATHS.MutatingAdmissionPolicyBinding, podEnvBinding(NAMESPACES.policy)],
  ] as const) {
    await createOk(rest, path, body);
    policyKinds.push(String(body.kind));
  }
  return policyKinds;
}

/** The requests timed: a pod create and a password change in a mode's namespace. */
interface Requests {
  podText: Record<Mode, string>;
  podCreate(mode: Mode): () => Promise<{ status: number }>;
  passwordChange(mode: Mode): () => Promise<{ status: number }>;
  dryRunPod(mode: Mode): Promise<{ status: number; body: Json }>;
  dryRunPasswordChange(mode: Mode): Promise<{ status: number; body: Json }>;
}

function requestsOf(rest: KubeRest): Requests {
  const podText: Record<Mode, string> = { none: '', 'dify-guard': '', policy: '' };
  for (const mode of MODES) podText[mode] = JSON.stringify(benchPod());
  const [patchA, patchB] = passwordPatches();
  // Each namespace alternates between the two values, so every attempt is a real change.
  const attempts: Record<Mode, number> = { none: 0, 'dify-guard': 0, policy: 0 };
  return {
    podText,
    podCreate: (mode) => () => rest.request('POST', paths.pods(NAMESPACES[mode]), { body: podText[mode] }),
    passwordChange: (mode) => () =>
      rest.request('PATCH', secretPath(mode), {
        body: attempts[mode]++ % 2 === 0 ? patchB : patchA,
        contentType: MERGE_PATCH,
      }),
    dryRunPod: (mode) =>
      rest.request('POST', paths.pods(NAMESPACES[mode]), { body: podText[mode], query: { dryRun: 'All' } }),
    dryRunPasswordChange: (mode) =>
      rest.request('PATCH', secretPath(mode), { body: patchA, contentType: MERGE_PATCH, query: { dryRun: 'All' } }),
  };
}

// The Dify container (the fixture's `api`); its log-shipper sidecar is left as sent by both.
const migrationForced = (pod: Json): boolean =>
  envMap(pod)['containers/api']?.[contract.env.migrationEnabled] === '"false"';

/** Policies and webhooks take effect asynchronously: waits until a dry run shows each one at work. */
async function waitUntilAtWork(requests: Requests): Promise<void> {
  const every = { timeoutMs: 30_000, intervalMs: 200 };
  for (const mode of ['dify-guard', 'policy'] as const) {
    await waitFor(
      `${mode}: a dry-run Dify pod comes back mutated`,
      async () => {
        const res = await requests.dryRunPod(mode);
        if (res.status === 201 && migrationForced(res.body)) return true;
        throw new Error(`HTTP ${res.status}: ${res.status === 201 ? 'not mutated' : String(res.body.message)}`);
      },
      every,
    );
    await waitFor(
      `${mode}: a dry-run password change is refused`,
      async () => {
        const res = await requests.dryRunPasswordChange(mode);
        if (res.status === 403) return true;
        throw new Error(`HTTP ${res.status}: ${String(res.body.message ?? 'not refused')}`);
      },
      every,
    );
  }
}

/** The env entries (container and name) on which the policy's pod mutation differs from dify-guard's. */
async function mutationDifferences(requests: Requests): Promise<string[]> {
  const byGuard = envMap((await requests.dryRunPod('dify-guard')).body);
  const byPolicy = envMap((await requests.dryRunPod('policy')).body);
  const differences: string[] = [];
  for (const key of new Set([...Object.keys(byGuard), ...Object.keys(byPolicy)])) {
    for (const name of new Set([...Object.keys(byGuard[key] ?? {}), ...Object.keys(byPolicy[key] ?? {})])) {
      if (byGuard[key]?.[name] !== byPolicy[key]?.[name]) differences.push(`${key} ${name}`);
    }
  }
  return differences;
}

interface TimedLoop {
  samples: Record<Mode, number[]>;
  statuses: Record<Mode, Record<string, number>>;
  unexpected: number;
}

/** `count` rounds of one request per mode, the modes' order rotating each round; each request timed. */
async function timeLoop(
  what: string,
  count: number,
  send: (mode: Mode) => () => Promise<{ status: number }>,
  expected: Record<Mode, number>,
  log: (line: string) => void,
): Promise<TimedLoop> {
  const samples: Record<Mode, number[]> = { none: [], 'dify-guard': [], policy: [] };
  const statuses: Record<Mode, Record<string, number>> = { none: {}, 'dify-guard': {}, policy: {} };
  let unexpected = 0;
  for (let i = 0; i < count; i++) {
    for (let k = 0; k < MODES.length; k++) {
      const mode = MODES[(i + k) % MODES.length] as Mode;
      const started = process.hrtime.bigint();
      const res = await send(mode)();
      samples[mode].push(Number(process.hrtime.bigint() - started) / 1000);
      statuses[mode][res.status] = (statuses[mode][res.status] ?? 0) + 1;
      if (res.status !== expected[mode]) unexpected += 1;
    }
    if ((i + 1) % 100 === 0) log(`  ${what}: ${i + 1}/${count}`);
  }
  return { samples, statuses, unexpected };
}

function summarize(description: string, loop: TimedLoop, expected: Record<Mode, number>): RequestKindResult {
  const latency = Object.fromEntries(MODES.map((m) => [m, summarizeSamples(loop.samples[m])])) as Record<
    Mode,
    LatencySummary
  >;
  const modes = Object.fromEntries(
    MODES.map((m) => [
      m,
      {
        latency: latency[m],
        addedP50Us: latency[m].p50Us - latency.none.p50Us,
        addedP99Us: latency[m].p99Us - latency.none.p99Us,
        statuses: loop.statuses[m],
      },
    ]),
  ) as Record<Mode, ModeResult>;
  return { description, expectedStatus: expected, modes, unexpected: loop.unexpected };
}

type WebhookMetrics = Awaited<ReturnType<typeof webhookMetrics>>;

/** Calls and mean duration of each webhook between two scrapes of the API server's metrics. */
function webhookMetricsDelta(
  before: WebhookMetrics,
  after: WebhookMetrics,
): ApiServerViewResult['apiServerWebhookMetrics'] {
  const out: ApiServerViewResult['apiServerWebhookMetrics'] = {};
  for (const [name, now] of Object.entries(after)) {
    const then = before[name] ?? { sum: 0, count: 0 };
    const calls = now.count - then.count;
    if (calls > 0) out[name] = { calls, meanMs: ((now.sum - then.sum) / calls) * 1000 };
  }
  return out;
}

/** Writes by dify-guard's user in the audit log, by verb and resource. */
function auditedWrites(cp: ControlPlane, user: string): Record<string, number> {
  const audited: Record<string, number> = {};
  for (const event of cp.auditEvents()) {
    if (event.user.username !== user || event.stage !== 'ResponseComplete') continue;
    const group = event.objectRef?.apiGroup ? `${event.objectRef.apiGroup}/` : '';
    const key = `${event.verb} ${group}${event.objectRef?.resource ?? event.requestURI}`;
    audited[key] = (audited[key] ?? 0) + 1;
  }
  return audited;
}

const POD_EXPECTED: Record<Mode, number> = { none: 201, 'dify-guard': 201, policy: 201 };
const SECRET_EXPECTED: Record<Mode, number> = { none: 200, 'dify-guard': 403, policy: 403 };

/** Warm-up, then the timed loops, with the API server's webhook metrics and dify-guard's probe around them. */
async function timedRequests(
  ctx: ApiServerViewContext,
  requests: Requests,
  options: ApiServerViewOptions,
  log: (line: string) => void,
) {
  log(`warm-up: ${options.warmup} of each request in each namespace`);
  await timeLoop('warm-up pods', options.warmup, requests.podCreate, POD_EXPECTED, log);
  await timeLoop('warm-up secrets', options.warmup, requests.passwordChange, SECRET_EXPECTED, log);
  await sleep(500);
  const metricsBefore = await webhookMetrics(ctx.rest);
  const probeBefore = await ctx.guardProbe.snapshot();
  log(`timed: ${options.n} pod creates and ${options.n} password changes per namespace, interleaved`);
  const pods = await timeLoop('pod creates', options.n, requests.podCreate, POD_EXPECTED, log);
  const secrets = await timeLoop('password changes', options.n, requests.passwordChange, SECRET_EXPECTED, log);
  await sleep(1000);
  const delta = deltaOf(probeBefore, await ctx.guardProbe.snapshot());
  const metrics = webhookMetricsDelta(metricsBefore, await webhookMetrics(ctx.rest));
  return { pods, secrets, delta, metrics };
}

export async function runApiServerView(
  ctx: ApiServerViewContext,
  options: ApiServerViewOptions,
  log: (line: string) => void,
): Promise<ApiServerViewResult> {
  await prepareNamespaces(ctx.rest);
  log("API-server view: registering the chart's webhook configurations and the in-process policies");
  const policyKinds = await registerAdmission(ctx);
  const requests = requestsOf(ctx.rest);
  await waitUntilAtWork(requests);
  const differences = await mutationDifferences(requests);
  const verdict = differences.length === 0 ? 'matches' : 'DIFFERS from';
  const listed = differences.length ? `: ${differences.join(', ')}` : '';
  log(`pod mutation by the policy ${verdict} dify-guard's (env entries; order aside)${listed}`);
  const { pods, secrets, delta, metrics } = await timedRequests(ctx, requests, options, log);
  const calls = classifyCalls(delta.calls);
  const admissionRequests = 2 * options.n;
  return {
    options,
    policyKinds,
    podMutationEquivalent: { equal: differences.length === 0, differences },
    podCreate: summarize(`Dify api pod CREATE (${POD_FIXTURE}, needs mutation)`, pods, POD_EXPECTED),
    secretPasswordChange: summarize(
      'PostgreSQL Secret password change (merge patch); refused by dify-guard and the policy, stored without admission',
      secrets,
      SECRET_EXPECTED,
    ),
    apiServerWebhookMetrics: metrics,
    difyGuardApiCalls: {
      ...calls,
      admissionRequests,
      byPath: delta.calls,
      lookupsPerAdmission: calls.lookups / admissionRequests,
      eventWritesPerDenial: calls.eventWrites / options.n,
    },
    auditedWritesByDifyGuard: auditedWrites(ctx.cp, ctx.guardUser),
  };
}
