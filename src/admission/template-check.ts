// The pod template rules (docs/rules.md#pod-template-rules): a Dify workload whose pod template
// stores a literal password or MIGRATION_ENABLED other than "false" gets warnings (names, never
// values) or a refusal; the same for a pod's last-applied-configuration annotation. Controllers'
// own writes (a ReplicaSet of a Deployment, a Job of a CronJob) are skipped: one warning, where the
// operator writes. Pure: raw JSON in, decision out.
import { isDeepStrictEqual } from 'node:util';
import { ENV, contract } from '../contract.js';
import { chartComponentOf, containerRole, runsDify } from './dify-containers.js';
import { templateMessages } from './messages.js';
import { brokerUrlHasLiteralPassword } from './pod-mutation.js';
import { asObject, metadataOf, nameOrGenerateName } from './raw-json.js';
import type { GuardSettings, TemplatePolicy } from './settings.js';
import type { JsonObject } from './types.js';

export type FindingKind = 'literal_password' | 'migration_enabled';

export interface TemplateFinding {
  container: string;
  variable: string;
  finding: FindingKind;
}

export interface TemplateDecision {
  allowed: boolean;
  /** The policy applied: `warn` also under `deny` for an UPDATE that leaves the template as it was. */
  mode: TemplatePolicy;
  findings: TemplateFinding[];
  warnings: string[];
  /** For a refusal: what was refused, why and what to do. */
  message?: string;
}

const CREDENTIALS = contract.credentialSettings;
const PASSWORD_SETTINGS: ReadonlySet<string> = new Set([
  ...CREDENTIALS.postgresqlPasswords,
  ...CREDENTIALS.redisPasswords,
]);
const URL_SETTINGS: ReadonlySet<string> = new Set(CREDENTIALS.redisUrls);

/** The workload kinds whose pod template is checked, and where their template sits. */
export const TEMPLATE_PATHS: Readonly<Record<string, readonly string[]>> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

export function podTemplateOf(kind: string, object: JsonObject): JsonObject | undefined {
  const path = TEMPLATE_PATHS[kind];
  if (!path) return undefined;
  let node: JsonObject | undefined = object;
  for (const field of path) node = asObject(node?.[field]);
  return node;
}

/** A write by a controller on behalf of its owner (the owner's own write was checked). */
export function isControllerOwned(object: JsonObject): boolean {
  const owners = metadataOf(object).ownerReferences;
  return Array.isArray(owners) && owners.some((owner: unknown) => asObject(owner)?.controller === true);
}

/**
 * Judges one workload write of `kind` under the template policy (`oldObject` for an UPDATE). An UPDATE
 * that leaves the template as it was (a label, a finalizer removed by the garbage collector) is only
 * warned even under deny, so an object stored before the policy can still be relabelled and deleted.
 */
export function judgeWorkloadTemplate(
  kind: string,
  object: JsonObject,
  settings: GuardSettings,
  oldObject?: JsonObject | null,
): TemplateDecision {
  const template = podTemplateOf(kind, object);
  const skip: TemplateDecision = { allowed: true, mode: settings.templatePolicy, findings: [], warnings: [] };
  if (!template || isControllerOwned(object) || metadataOf(object).deletionTimestamp !== undefined) return skip;
  const findings = templateFindings(template, settings);
  const unchanged = oldObject ? isDeepStrictEqual(podTemplateOf(kind, oldObject), template) : false;
  return decide(kind, nameOrGenerateName(object), findings, unchanged ? 'warn' : settings.templatePolicy);
}

/**
 * The literal passwords a pod's last-applied-configuration annotation stores (kubectl apply keeps the
 * whole manifest there). MIGRATION_ENABLED in it has no effect: the pod's own env is forced anyway.
 */
export function lastAppliedFindings(pod: JsonObject, settings: GuardSettings): TemplateDecision {
  const annotations = asObject(metadataOf(pod).annotations);
  const text = annotations?.[contract.annotations.lastApplied];
  const none: TemplateDecision = { allowed: true, mode: 'warn', findings: [], warnings: [] };
  if (typeof text !== 'string' || isControllerOwned(pod)) return none;
  let applied: JsonObject | undefined;
  try {
    applied = asObject(JSON.parse(text));
  } catch {
    return none; // not JSON: nothing kubectl could re-apply either
  }
  if (!applied) return none;
  const findings = templateFindings(applied, settings).filter((f) => f.finding === 'literal_password');
  return {
    ...none,
    findings,
    warnings: findings.length > 0 ? [templateMessages.lastAppliedWarning(variablesOf(findings))] : [],
  };
}

/** Findings of one pod (template): only Dify pods, only their Dify containers. */
export function templateFindings(template: JsonObject, settings: GuardSettings): TemplateFinding[] {
  const component = chartComponentOf(template);
  const isDify =
    component !== undefined ? settings.injectCredentials.includes(component) : runsDify(template, settings);
  if (!isDify) return [];
  // This chart's migration Job runs the migration itself: its MIGRATION_ENABLED is not the pods' rule.
  const checkMigration = component === undefined || settings.forceMigrationDisabled.includes(component);
  const spec = asObject(template.spec) ?? {};
  const findings: TemplateFinding[] = [];
  for (const [field, isInit] of [
    ['initContainers', true],
    ['containers', false],
  ] as const) {
    const items = spec[field];
    if (!Array.isArray(items)) continue;
    for (const item of items) {
      const container = asObject(item);
      if (!container || containerRole(container, isInit, settings) === 'other') continue;
      findings.push(...containerFindings(container, checkMigration));
    }
  }
  return findings;
}

function containerFindings(container: JsonObject, checkMigration: boolean): TemplateFinding[] {
  const name = typeof container.name === 'string' ? container.name : '?';
  const env = Array.isArray(container.env) ? (container.env as unknown[]) : [];
  return env.flatMap((item: unknown): TemplateFinding[] => {
    const finding = envEntryFinding(asObject(item), checkMigration);
    return finding ? [{ container: name, ...finding }] : [];
  });
}

/** What one env entry stores that the rules refuse: a literal password first, else MIGRATION_ENABLED on. */
function envEntryFinding(
  entry: JsonObject | undefined,
  checkMigration: boolean,
): Omit<TemplateFinding, 'container'> | undefined {
  const variable = entry?.name;
  if (!entry || typeof variable !== 'string') return undefined;
  if (storesLiteralPassword(variable, entry.value)) return { variable, finding: 'literal_password' };
  const migrationOn = variable === ENV.migrationEnabled && (entry.value !== 'false' || entry.valueFrom !== undefined);
  return checkMigration && migrationOn ? { variable, finding: 'migration_enabled' } : undefined;
}

function storesLiteralPassword(variable: string, value: unknown): boolean {
  return (
    typeof value === 'string' &&
    value !== '' &&
    (PASSWORD_SETTINGS.has(variable) || (URL_SETTINGS.has(variable) && brokerUrlHasLiteralPassword(value)))
  );
}

function decide(kind: string, name: string, findings: TemplateFinding[], policy: TemplatePolicy): TemplateDecision {
  if (findings.length === 0) return { allowed: true, mode: policy, findings, warnings: [] };
  const passwords = variablesOf(findings.filter((f) => f.finding === 'literal_password'));
  const migration = findings.some((f) => f.finding === 'migration_enabled');
  const warnings = [
    ...(passwords.length > 0 ? [templateMessages.passwordWarning(kind, passwords)] : []),
    ...(migration ? [templateMessages.migrationWarning(kind)] : []),
  ];
  if (policy === 'warn') return { allowed: true, mode: policy, findings, warnings };
  return {
    allowed: false,
    mode: policy,
    findings,
    warnings: [],
    message: templateMessages.refusal(kind, name, passwords, migration),
  };
}

/** The distinct variable names of some findings, in order. */
export function variablesOf(findings: readonly TemplateFinding[]): string[] {
  return [...new Set(findings.map((f) => f.variable))];
}
