// What most scenario files share: one control plane, the real dify-guard process, and the chart's
// webhook configurations registered against it. Everything stops in the file's teardown, and a
// failing file prints the last output of each process.
import { contract } from '../../src/contract.js';
import { paths, type Json, type KubeRest } from '../kube-rest.js';
import { startDifyGuard, type DifyGuard, type DifyGuardOptions, type JsonLine } from './dify-guard.js';
import { startControlPlane, type AuditEvent, type ControlPlane } from './harness.js';
import { registerWebhooks, type RegisteredWebhooks } from './webhooks.js';

export interface Stack {
  cp: ControlPlane;
  guard: DifyGuard;
  webhooks: RegisteredWebhooks;
  rest: KubeRest;
}

interface TapLike {
  teardown(fn: () => unknown): void;
  passing(): boolean;
  comment(...args: unknown[]): void;
}

export async function startStack(
  t: TapLike,
  name: string,
  options: { guard?: DifyGuardOptions; values?: Json } = {},
): Promise<Stack> {
  const { cp, guard } = await startGuardedControlPlane(t, name, options.guard);
  const webhooks = await registerWebhooks(cp, guard, options.values ? { values: options.values } : {});
  return { cp, guard, webhooks, rest: cp.rest() };
}

/** The control plane and dify-guard of `startStack`, no webhook registered yet. */
export async function startGuardedControlPlane(
  t: TapLike,
  name: string,
  guardOptions?: DifyGuardOptions,
): Promise<{ cp: ControlPlane; guard: DifyGuard }> {
  const cp = await startControlPlane(t, { name });
  const guard = await startDifyGuard(t, cp, guardOptions);
  // Registered last, so it runs first: the logs are read before anything stops.
  t.teardown(() => {
    if (!t.passing())
      t.comment(`${cp.diagnostics()}\n--- dify-guard (${guard.process.logPath})\n${guard.process.tail(40)}`);
  });
  return { cp, guard };
}

/** Creates a namespace (it may exist already). */
export async function ensureNamespace(rest: KubeRest, name: string): Promise<void> {
  const res = await rest.create(paths.namespaces, { metadata: { name } });
  if (res.status !== 201 && res.status !== 409)
    throw new Error(`namespace ${name}: ${res.status} ${String(res.body.message)}`);
}

/** The env list of a container of a (stored) pod. */
export function envOf(pod: Json, container: string): Json[] {
  const spec = pod.spec as Json;
  const all = [...((spec.containers as Json[]) ?? []), ...((spec.initContainers as Json[] | undefined) ?? [])];
  const found = all.find((c) => c.name === container);
  if (!found) throw new Error(`pod has no container ${container}`);
  return (found.env as Json[] | undefined) ?? [];
}

export function envVar(pod: Json, container: string, name: string): Json | undefined {
  return envOf(pod, container).find((e) => e.name === name);
}

/** The API server's audit event of the webhook's answer to one request (auditAnnotations are prefixed with the webhook name). */
export function webhookAnnotations(event: AuditEvent, webhookName: string): Record<string, string> {
  const prefix = `${webhookName}/`;
  return Object.fromEntries(
    Object.entries(event.annotations ?? {})
      .filter(([k]) => k.startsWith(prefix))
      .map(([k, v]) => [k.slice(prefix.length), v]),
  );
}

export const SECRET_WEBHOOK = contract.webhook.secretWebhookName;
export const POD_WEBHOOK = contract.webhook.podWebhookName;

/** dify-guard's audit log lines (the JSON records of refusals and audited allowances). */
export function auditLines(guard: DifyGuard): JsonLine[] {
  return guard.logLines().filter((l) => l.audit === true);
}

export const base64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');
