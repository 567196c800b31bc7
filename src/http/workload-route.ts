// POST /validate/workloads: Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs of
// Dify go to the pure judgeWorkloadTemplate; this handler adds the metric, the audit line and the
// audit annotations (names only: the variables, never their values).
import type { Logger } from 'pino';
import type { GuardSettings } from '../admission/settings.js';
import {
  TEMPLATE_PATHS,
  judgeWorkloadTemplate,
  variablesOf,
  type TemplateDecision,
} from '../admission/template-check.js';
import type { AdmissionRequest } from '../admission/types.js';
import { recordTemplateAudit } from '../audit/audit-trail.js';
import type { Metrics } from '../metrics.js';
import { allowed, denied, type AdmissionHandler, type AdmissionVerdict } from './admission-review.js';

export interface WorkloadRouteDeps {
  settings: GuardSettings;
  log: Logger;
  metrics: Metrics;
}

const GROUPS: Readonly<Record<string, string>> = {
  Deployment: 'apps',
  StatefulSet: 'apps',
  DaemonSet: 'apps',
  ReplicaSet: 'apps',
  Job: 'batch',
  CronJob: 'batch',
};

export function workloadTemplateHandler(deps: WorkloadRouteDeps): AdmissionHandler {
  return (request) => {
    const kind = request.kind.kind;
    const checked =
      kind in TEMPLATE_PATHS &&
      GROUPS[kind] === request.kind.group &&
      !request.subResource &&
      (request.operation === 'CREATE' || request.operation === 'UPDATE');
    if (!checked || !request.object) return allowed();
    const decision = judgeWorkloadTemplate(kind, request.object, deps.settings, request.oldObject);
    if (decision.findings.length === 0) return allowed();
    const mode = decision.mode;
    for (const finding of new Set(decision.findings.map((f) => f.finding)))
      deps.metrics.templateFindings.inc({ kind, finding, mode });
    recordTemplateAudit(deps.log, {
      decision: decision.allowed ? 'allowed' : 'denied',
      uid: request.uid,
      user: request.userInfo.username ?? '',
      groups: request.userInfo.groups ?? [],
      operation: request.operation,
      kind,
      namespace: request.namespace ?? '',
      name: request.name || nameOf(request),
      mode,
      findings: decision.findings,
      dryRun: request.dryRun === true,
    });
    const verdict: AdmissionVerdict = decision.allowed
      ? allowed(decision.warnings)
      : denied(decision.message ?? '', decision.warnings);
    verdict.auditAnnotations = auditAnnotationsOf(decision, mode);
    return verdict;
  };
}

/** The API server prefixes these keys with the webhook name and writes them to its audit log. */
function auditAnnotationsOf(decision: TemplateDecision, mode: string): Record<string, string> {
  return {
    decision: decision.allowed ? 'allowed' : 'denied',
    mode,
    findings: [...new Set(decision.findings.map((f) => f.finding))].join(','),
    variables: variablesOf(decision.findings).join(','),
  };
}

function nameOf(request: AdmissionRequest): string {
  const metadata = (request.object?.metadata ?? {}) as { name?: unknown; generateName?: unknown };
  const name = metadata.name ?? metadata.generateName;
  return typeof name === 'string' ? name : '';
}
