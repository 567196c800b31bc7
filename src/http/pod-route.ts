// POST /mutate/pods: Pod CREATE goes to the pure mutatePod (and the last-applied check); anything
// else is allowed unchanged (a Pod's env cannot change after creation). Each mutation is logged
// with names only: the pod, its containers and the variables changed.
import type { Logger } from 'pino';
import { mutatePod } from '../admission/pod-mutation.js';
import type { GuardSettings } from '../admission/settings.js';
import { lastAppliedFindings } from '../admission/template-check.js';
import type { AdmissionRequest, JsonObject, MutationResult } from '../admission/types.js';
import { recordTemplateAudit } from '../audit/audit-trail.js';
import type { Metrics } from '../metrics.js';
import { allowed, patched, type AdmissionHandler } from './admission-review.js';

export interface PodRouteDeps {
  settings: GuardSettings;
  log: Logger;
  metrics: Metrics;
}

export function podMutationHandler(deps: PodRouteDeps): AdmissionHandler {
  return (request) => {
    const isPodCreate =
      request.operation === 'CREATE' &&
      request.kind.group === '' &&
      request.kind.kind === 'Pod' &&
      !request.subResource;
    if (!isPodCreate || !request.object) return allowed();
    const result = mutatePod(request.object, deps.settings);
    if (result.patch.length > 0) logMutation(deps.log, request, request.object, result);
    const applied = lastAppliedFindings(request.object, deps.settings);
    if (applied.findings.length > 0) {
      deps.metrics.templateFindings.inc({ kind: 'Pod', finding: 'literal_password', mode: 'warn' });
      recordTemplateAudit(deps.log, {
        decision: 'allowed',
        uid: request.uid,
        user: request.userInfo.username ?? '',
        groups: request.userInfo.groups ?? [],
        operation: request.operation,
        kind: 'Pod',
        namespace: request.namespace ?? '',
        name: podName(request.object),
        mode: 'warn',
        findings: applied.findings,
        dryRun: request.dryRun === true,
      });
    }
    return patched(result.patch, [...result.warnings, ...applied.warnings]);
  };
}

function logMutation(log: Logger, request: AdmissionRequest, pod: JsonObject, result: MutationResult): void {
  const metadata = (pod.metadata ?? {}) as { name?: unknown; generateName?: unknown };
  log.info(
    {
      uid: request.uid,
      namespace: request.namespace ?? '',
      name: typeof metadata.name === 'string' ? metadata.name : undefined,
      generateName: typeof metadata.generateName === 'string' ? metadata.generateName : undefined,
      user: request.userInfo.username ?? '',
      dryRun: request.dryRun === true,
      changes: result.changes,
    },
    'Dify pod mutated',
  );
}

function podName(pod: JsonObject): string {
  const metadata = (pod.metadata ?? {}) as { name?: unknown; generateName?: unknown };
  const name = metadata.name ?? metadata.generateName;
  return typeof name === 'string' ? name : '';
}
