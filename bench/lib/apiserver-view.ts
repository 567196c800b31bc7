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

export async function runApiServerView(
  ctx: ApiServerViewContext,
  options: ApiServerViewOptions,
  log: (line: string) => void,
): Promise<ApiServerViewResult> {
  const { cp, guard, rest } = ctx;
  for (const mode of MODES) {
    const ns = NAMESPACES[mode];
    await createOk(rest, paths.namespaces, { metadata: { name: ns } });
    await createOk(rest, paths.pvcs(ns), postgresqlPvc(ns));
    await createOk(rest, paths.secrets(ns), postgresqlSecret(ns));
  }
  log("API-server view: registering the chart's webhook configurations and the in-process policies");
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

  const podText: Record<Mode, string> = { none: '', 'dify-guard': '', policy: '' };
  for (const mode of MODES) podText[mode] = JSON.stringify(benchPod());
  const secretPath = (mode: Mode): string =>
    paths.secret(NAMESPACES[mode], expandName(contract.names.postgresqlSecret, RELEASE));
  const [patchA, patchB] = passwordPatches();

  // Policies and webhooks take effect asynchronously: wait until a dry run shows each one at work.
  // The Dify container (the fixture's `api`); its log-shipper sidecar is left as sent by both.
  const migrationForced = (pod: Json): boolean =>
    envMap(pod)['containers/api']?.[contract.env.migrationEnabled] === '"false"';
  for (const mode of ['dify-guard', 'policy'] as const) {
    await waitFor(
      `${mode}: a dry-run Dify pod comes back mutated`,
      async () => {
        const res = await rest.request('POST', paths.pods(NAMESPACES[mode]), {
          body: podText[mode],
          query: { dryRun: 'All' },
        });
        if (res.status === 201 && migrationForced(res.body)) return true;
        throw new Error(`HTTP ${res.status}: ${res.status === 201 ? 'not mutated' : String(res.body.message)}`);
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    await waitFor(
      `${mode}: a dry-run password change is refused`,
      async () => {
        const res = await rest.request('PATCH', secretPath(mode), {
          body: patchA,
          contentType: 'application/merge-patch+json',
          query: { dryRun: 'All' },
        });
        if (res.status === 403) return true;
        throw new Error(`HTTP ${res.status}: ${String(res.body.message ?? 'not refused')}`);
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
  }
  const dryRunPod = async (mode: Mode): Promise<Json> =>
    (await rest.request('POST', paths.pods(NAMESPACES[mode]), { body: podText[mode], query: { dryRun: 'All' } })).body;
  const byGuard = envMap(await dryRunPod('dify-guard'));
  const byPolicy = envMap(await dryRunPod('policy'));
  const differences: string[] = [];
  for (const key of new Set([...Object.keys(byGuard), ...Object.keys(byPolicy)])) {
    for (const name of new Set([...Object.keys(byGuard[key] ?? {}), ...Object.keys(byPolicy[key] ?? {})])) {
      if (byGuard[key]?.[name] !== byPolicy[key]?.[name]) differences.push(`${key} ${name}`);
    }
  }
  log(
    `pod mutation by the policy ${differences.length === 0 ? 'matches' : 'DIFFERS from'} dify-guard's (env entries; order aside)${differences.length ? `: ${differences.join(', ')}` : ''}`,
  );

  const podCreate = (mode: Mode) => () => rest.request('POST', paths.pods(NAMESPACES[mode]), { body: podText[mode] });
  // Each namespace alternates between the two values, so every attempt is a real change.
  const attempts: Record<Mode, number> = { none: 0, 'dify-guard': 0, policy: 0 };
  const passwordChange = (mode: Mode) => () =>
    rest.request('PATCH', secretPath(mode), {
      body: attempts[mode]++ % 2 === 0 ? patchB : patchA,
      contentType: 'application/merge-patch+json',
    });

  const timeLoop = async (
    what: string,
    count: number,
    send: (mode: Mode, i: number) => () => Promise<{ status: number }>,
    expected: Record<Mode, number>,
  ): Promise<{
    samples: Record<Mode, number[]>;
    statuses: Record<Mode, Record<string, number>>;
    unexpected: number;
  }> => {
    const samples: Record<Mode, number[]> = { none: [], 'dify-guard': [], policy: [] };
    const statuses: Record<Mode, Record<string, number>> = { none: {}, 'dify-guard': {}, policy: {} };
    let unexpected = 0;
    for (let i = 0; i < count; i++) {
      for (let k = 0; k < MODES.length; k++) {
        const mode = MODES[(i + k) % MODES.length] as Mode;
        const started = process.hrtime.bigint();
        const res = await send(mode, i)();
        samples[mode].push(Number(process.hrtime.bigint() - started) / 1000);
        statuses[mode][res.status] = (statuses[mode][res.status] ?? 0) + 1;
        if (res.status !== expected[mode]) unexpected += 1;
      }
      if ((i + 1) % 100 === 0) log(`  ${what}: ${i + 1}/${count}`);
    }
    return { samples, statuses, unexpected };
  };

  const podExpected: Record<Mode, number> = { none: 201, 'dify-guard': 201, policy: 201 };
  const secretExpected: Record<Mode, number> = { none: 200, 'dify-guard': 403, policy: 403 };
  log(`warm-up: ${options.warmup} of each request in each namespace`);
  await timeLoop('warm-up pods', options.warmup, podCreate, podExpected);
  await timeLoop('warm-up secrets', options.warmup, passwordChange, secretExpected);
  await sleep(500);

  const metricsBefore = await webhookMetrics(rest);
  const probeBefore = await ctx.guardProbe.snapshot();
  log(`timed: ${options.n} pod creates and ${options.n} password changes per namespace, interleaved`);
  const pods = await timeLoop('pod creates', options.n, podCreate, podExpected);
  const secrets = await timeLoop('password changes', options.n, passwordChange, secretExpected);
  await sleep(1000);
  const probeAfter = await ctx.guardProbe.snapshot();
  const metricsAfter = await webhookMetrics(rest);

  const summarize = (description: string, loop: typeof pods, expected: Record<Mode, number>): RequestKindResult => {
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
  };

  const apiServerWebhookMetrics: ApiServerViewResult['apiServerWebhookMetrics'] = {};
  for (const [name, after] of Object.entries(metricsAfter)) {
    const before = metricsBefore[name] ?? { sum: 0, count: 0 };
    const calls = after.count - before.count;
    if (calls > 0) apiServerWebhookMetrics[name] = { calls, meanMs: ((after.sum - before.sum) / calls) * 1000 };
  }
  const delta = deltaOf(probeBefore, probeAfter);
  const calls = classifyCalls(delta.calls);
  const admissionRequests = 2 * options.n;

  const audited: Record<string, number> = {};
  for (const event of cp.auditEvents()) {
    if (event.user.username !== ctx.guardUser || event.stage !== 'ResponseComplete') continue;
    const key = `${event.verb} ${event.objectRef?.apiGroup ? `${event.objectRef.apiGroup}/` : ''}${event.objectRef?.resource ?? event.requestURI}`;
    audited[key] = (audited[key] ?? 0) + 1;
  }

  return {
    options,
    policyKinds,
    podMutationEquivalent: { equal: differences.length === 0, differences },
    podCreate: summarize(`Dify api pod CREATE (${POD_FIXTURE}, needs mutation)`, pods, podExpected),
    secretPasswordChange: summarize(
      'PostgreSQL Secret password change (merge patch); refused by dify-guard and the policy, stored without admission',
      secrets,
      secretExpected,
    ),
    apiServerWebhookMetrics,
    difyGuardApiCalls: {
      ...calls,
      admissionRequests,
      byPath: delta.calls,
      lookupsPerAdmission: calls.lookups / admissionRequests,
      eventWritesPerDenial: calls.eventWrites / options.n,
    },
    auditedWritesByDifyGuard: audited,
  };
}
