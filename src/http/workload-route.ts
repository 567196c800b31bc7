// POST /validate/workloads: Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs of
// Dify go to the pure judgeWorkloadTemplate; this handler adds the metric, the audit line and the
// audit annotations (names only: the variables, never their values).
import type { Logger } from 'pino';
import { nameOrGenerateName } from '../admission/raw-json.js';
import type { GuardSettings } from '../admission/settings.js';
import {
  TEMPLATE_PATHS,
  judgeWorkloadTemplate,
  variablesOf,
  type TemplateDecision,
} from '../admission/template-check.js';
import type { AdmissionRequest } from '../admission/types.js';
import { recordTemplateAudit, requestFieldsOf } from '../audit/audit-trail.js';
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
    if (!isCheckedWorkload(request) || !request.object) return allowed();
    const kind = request.kind.kind;
    const decision = judgeWorkloadTemplate(kind, request.object, deps.settings, request.oldObject);
    if (decision.findings.length === 0) return allowed();
    countAndAudit(deps, request, decision);
    const verdict: AdmissionVerdict = decision.allowed
      ? allowed(decision.warnings)
      : denied(decision.message ?? '', decision.warnings);
    verdict.auditAnnotations = auditAnnotationsOf(decision);
    return verdict;
  };
}

/** A CREATE or UPDATE of one of the workload kinds, in its own API group, not a subresource. */
function isCheckedWorkload(request: AdmissionRequest): boolean {
  const kind = request.kind.kind;
  return (
    kind in TEMPLATE_PATHS &&
    GROUPS[kind] === request.kind.group &&
    !request.subResource &&
    (request.operation === 'CREATE' || request.operation === 'UPDATE')
  );
}

/** One count per kind of finding, and the audit line (names only). */
function countAndAudit(deps: WorkloadRouteDeps, request: AdmissionRequest, decision: TemplateDecision): void {
  const kind = request.kind.kind;
  const mode = decision.mode;
  for (const finding of new Set(decision.findings.map((f) => f.finding)))
    deps.metrics.templateFindings.inc({ kind, finding, mode });
  recordTemplateAudit(deps.log, {
    ...requestFieldsOf(request),
    decision: decision.allowed ? 'allowed' : 'denied',
    kind,
    name: request.name || nameOrGenerateName(request.object),
    mode,
    findings: decision.findings,
  });
}

/** The API server prefixes these keys with the webhook name and writes them to its audit log. */
function auditAnnotationsOf(decision: TemplateDecision): Record<string, string> {
  return {
    decision: decision.allowed ? 'allowed' : 'denied',
    mode: decision.mode,
    findings: [...new Set(decision.findings.map((f) => f.finding))].join(','),
    variables: variablesOf(decision.findings).join(','),
  };
}
