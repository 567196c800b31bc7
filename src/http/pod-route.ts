// POST /mutate/pods: Pod CREATE goes to the pure mutatePod (and the last-applied check); anything
// else is allowed unchanged (a Pod's env cannot change after creation). Each mutation is logged
// with names only: the pod, its containers and the variables changed.
import type { Logger } from 'pino';
import { mutatePod } from '../admission/pod-mutation.js';
import { metadataString, nameOrGenerateName } from '../admission/raw-json.js';
import type { GuardSettings } from '../admission/settings.js';
import { lastAppliedFindings } from '../admission/template-check.js';
import type { AdmissionRequest, JsonObject, MutationResult } from '../admission/types.js';
import { recordTemplateAudit, requestFieldsOf } from '../audit/audit-trail.js';
import type { Metrics } from '../metrics.js';
import { allowed, patched, type AdmissionHandler } from './admission-review.js';

export interface PodRouteDeps {
  settings: GuardSettings;
  log: Logger;
  metrics: Metrics;
}

export function podMutationHandler(deps: PodRouteDeps): AdmissionHandler {
  return (request) => {
    if (!isPodCreate(request) || !request.object) return allowed();
    const result = mutatePod(request.object, deps.settings);
    if (result.patch.length > 0) logMutation(deps.log, request, request.object, result);
    const applied = lastAppliedFindings(request.object, deps.settings);
    if (applied.findings.length > 0) auditLastApplied(deps, request, request.object, applied.findings);
    return patched(result.patch, [...result.warnings, ...applied.warnings]);
  };
}

function isPodCreate(request: AdmissionRequest): boolean {
  return (
    request.operation === 'CREATE' && request.kind.group === '' && request.kind.kind === 'Pod' && !request.subResource
  );
}

/** A pod's last-applied annotation stores a literal password: counted and audited, the pod allowed (warn). */
function auditLastApplied(
  deps: PodRouteDeps,
  request: AdmissionRequest,
  pod: JsonObject,
  findings: ReturnType<typeof lastAppliedFindings>['findings'],
): void {
  deps.metrics.templateFindings.inc({ kind: 'Pod', finding: 'literal_password', mode: 'warn' });
  recordTemplateAudit(deps.log, {
    ...requestFieldsOf(request),
    decision: 'allowed',
    kind: 'Pod',
    name: nameOrGenerateName(pod),
    mode: 'warn',
    findings,
  });
}

function logMutation(log: Logger, request: AdmissionRequest, pod: JsonObject, result: MutationResult): void {
  log.info(
    {
      uid: request.uid,
      namespace: request.namespace ?? '',
      name: metadataString(pod, 'name'),
      generateName: metadataString(pod, 'generateName'),
      user: request.userInfo.username ?? '',
      dryRun: request.dryRun === true,
      changes: result.changes,
    },
    'Dify pod mutated',
  );
}
