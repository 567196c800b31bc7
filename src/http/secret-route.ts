// POST /validate/secrets: the pure judgeSecretChange decides, with PVC states from the watch-backed
// cache; this handler turns the decision into a response, audit annotations, metrics and the trail.
import { judgeSecretChange, secretChangeFromRequest } from '../admission/secret-guard.js';
import type { GuardSettings } from '../admission/settings.js';
import type { AdmissionRequest, JsonObject, PvcStateOf, SecretDecision } from '../admission/types.js';
import type { AuditSink } from '../audit/audit-trail.js';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.js';
import { faultSummary } from './admission-plugin.js';
import { allowed, denied, type AdmissionHandler, type AdmissionVerdict } from './admission-review.js';

export interface SecretGuardDeps {
  settings: GuardSettings;
  pvcStateOf: PvcStateOf;
  audit: AuditSink;
  metrics: Metrics;
  log: Logger;
}

export function secretGuardHandler(deps: SecretGuardDeps): AdmissionHandler {
  return (request) => {
    const isSecret = request.kind.group === '' && request.kind.kind === 'Secret' && !request.subResource;
    if (!isSecret || request.operation === 'CONNECT') return allowed();
    const decision = judgeSecretChange(secretChangeFromRequest(request), deps.settings, deps.pvcStateOf);

    const verdict: AdmissionVerdict = decision.allowed
      ? allowed(decision.warnings)
      : denied(decision.message ?? `dify-guard denied this change (${decision.reason})`, decision.warnings);
    if (decision.reason !== 'NotGuarded') verdict.auditAnnotations = auditAnnotationsOf(decision);
    if (!decision.allowed) deps.metrics.denials.inc({ reason: decision.reason });
    else if (decision.audit) deps.metrics.auditedAllowed.inc({ reason: decision.reason });
    if (!decision.allowed || decision.audit) {
      try {
        deps.audit.record(auditRecordOf(request, decision), { uid: secretUidOf(request) });
      } catch (fault) {
        // The decision stands even if the trail cannot be written; the failure is logged without content.
        deps.log.error({ uid: request.uid, fault: faultSummary(fault) }, 'audit record could not be written');
      }
    }
    return verdict;
  };
}

/** The API server prefixes these keys with the webhook name and writes them to its audit log. */
function auditAnnotationsOf(decision: SecretDecision): Record<string, string> {
  const annotations: Record<string, string> = { decision: decision.allowed ? 'allowed' : 'denied', reason: decision.reason };
  if (decision.pvc) annotations.pvc = `${decision.pvc.namespace}/${decision.pvc.name}`;
  return annotations;
}

function auditRecordOf(request: AdmissionRequest, decision: SecretDecision): Parameters<AuditSink['record']>[0] {
  return {
    decision: decision.allowed ? 'allowed' : 'denied',
    uid: request.uid,
    user: request.userInfo.username ?? '',
    groups: request.userInfo.groups ?? [],
    operation: request.operation,
    namespace: request.namespace ?? '',
    name: request.name || metadataOf(request.oldObject)?.name || metadataOf(request.object)?.name || '',
    reason: decision.reason,
    pvc: decision.pvc ? `${decision.pvc.namespace}/${decision.pvc.name}` : null,
    dryRun: request.dryRun === true,
    message: decision.message ?? decision.warnings.join(' '),
  };
}

function secretUidOf(request: AdmissionRequest): string | undefined {
  return metadataOf(request.oldObject)?.uid ?? metadataOf(request.object)?.uid;
}

function metadataOf(object: JsonObject | null | undefined): { name?: string; uid?: string } | undefined {
  const metadata = object?.metadata;
  if (typeof metadata !== 'object' || metadata === null) return undefined;
  const { name, uid } = metadata as { name?: unknown; uid?: unknown };
  return { ...(typeof name === 'string' ? { name } : {}), ...(typeof uid === 'string' ? { uid } : {}) };
}
