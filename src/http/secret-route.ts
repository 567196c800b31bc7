// POST /validate/secrets: the pure judgeSecretChange decides, with PVC states from the watch-backed
// cache and, for a password change under the PVC, the release's PostgreSQL's answer (rate-limited per
// Secret); this handler turns the decision into a response, audit annotations, metrics and the trail.
import { metadataString } from '../admission/raw-json.js';
import { judgeSecretChange, passwordCheckOf, secretChangeFromRequest } from '../admission/secret-guard.js';
import type { GuardSettings } from '../admission/settings.js';
import type {
  AdmissionRequest,
  PasswordVerification,
  PvcState,
  PvcStateOf,
  SecretChange,
  SecretDecision,
} from '../admission/types.js';
import { requestFieldsOf, type AuditRecord, type AuditSink } from '../audit/audit-trail.js';
import type { PasswordVerifier } from '../cluster/postgres-verifier.js';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.js';
import { faultSummary } from './admission-plugin.js';
import { allowed, denied, type AdmissionHandler, type AdmissionVerdict } from './admission-review.js';
import type { RateLimiter } from './rate-limit.js';

export interface SecretGuardDeps {
  settings: GuardSettings;
  pvcStateOf: PvcStateOf;
  audit: AuditSink;
  metrics: Metrics;
  log: Logger;
  /** Asks the release's PostgreSQL whether it accepts a new password. */
  verifier: PasswordVerifier;
  /** Checks per Secret; a dry run counts too, or it would be an oracle without a limit. */
  rateLimiter: RateLimiter;
}

export function secretGuardHandler(deps: SecretGuardDeps): AdmissionHandler {
  return async (request) => {
    const isSecret = request.kind.group === '' && request.kind.kind === 'Secret' && !request.subResource;
    if (!isSecret || request.operation === 'CONNECT') return allowed();
    const change = secretChangeFromRequest(request);
    const decision = await decide(deps, change, request.uid);
    countDecision(deps.metrics, decision, change);
    if (!decision.allowed || decision.audit) recordAudit(deps, request, decision);
    return verdictOf(decision);
  };
}

/** judgeSecretChange, asked again with the database's answer when its first decision says `verify`. */
async function decide(deps: SecretGuardDeps, change: SecretChange, uid: string): Promise<SecretDecision> {
  // One cache answer per request, so both passes of the decision see the same PVC state.
  const pvcStateOf = rememberedPvcState(deps.pvcStateOf);
  const decision = judgeSecretChange(change, deps.settings, pvcStateOf);
  if (!decision.verify) return decision;
  return judgeSecretChange(change, deps.settings, pvcStateOf, await verify(deps, change, uid));
}

function countDecision(metrics: Metrics, decision: SecretDecision, change: SecretChange): void {
  if (decision.reason === 'PasswordRotationVerified' && !change.dryRun) metrics.verifiedRotations.inc();
  if (!decision.allowed) metrics.denials.inc({ reason: decision.reason });
  else if (decision.audit) metrics.auditedAllowed.inc({ reason: decision.reason });
}

function verdictOf(decision: SecretDecision): AdmissionVerdict {
  const verdict: AdmissionVerdict = decision.allowed
    ? allowed(decision.warnings)
    : denied(decision.message ?? `dify-guard denied this change (${decision.reason})`, decision.warnings);
  if (decision.reason !== 'NotGuarded') verdict.auditAnnotations = auditAnnotationsOf(decision);
  return verdict;
}

/** The decision stands even if the trail cannot be written; the failure is logged without content. */
function recordAudit(deps: SecretGuardDeps, request: AdmissionRequest, decision: SecretDecision): void {
  try {
    deps.audit.record(auditRecordOf(request, decision), { uid: secretUidOf(request) });
  } catch (fault) {
    deps.log.error({ uid: request.uid, fault: faultSummary(fault) }, 'audit record could not be written');
  }
}

/** The database's answer for this request's new password, or rate-limited without asking. */
async function verify(
  deps: SecretGuardDeps,
  change: SecretChange,
  uid: string,
): Promise<PasswordVerification | undefined> {
  const check = passwordCheckOf(change, deps.settings);
  if (!check) return undefined;
  const limit = deps.rateLimiter.take(check.secretKey);
  const verification: PasswordVerification = limit.allowed
    ? await deps.verifier(check)
    : {
        outcome: 'rate-limited',
        retryAfterSeconds: limit.retryAfterSeconds,
        limitPerMinute: deps.rateLimiter.perMinute,
      };
  deps.metrics.verifications.inc({ outcome: verification.outcome });
  const { outcome, detail, address } = verification;
  deps.log.info(
    { uid, secret: check.secretKey, outcome, detail, address, dryRun: change.dryRun },
    'PostgreSQL password check',
  );
  return verification;
}

function rememberedPvcState(pvcStateOf: PvcStateOf): PvcStateOf {
  const seen = new Map<string, PvcState>();
  return (namespace, name) => {
    const key = `${namespace}/${name}`;
    if (!seen.has(key)) seen.set(key, pvcStateOf(namespace, name));
    return seen.get(key)!;
  };
}

/** The API server prefixes these keys with the webhook name and writes them to its audit log. */
function auditAnnotationsOf(decision: SecretDecision): Record<string, string> {
  const annotations: Record<string, string> = {
    decision: decision.allowed ? 'allowed' : 'denied',
    reason: decision.reason,
  };
  if (decision.pvc) annotations.pvc = `${decision.pvc.namespace}/${decision.pvc.name}`;
  return annotations;
}

function auditRecordOf(request: AdmissionRequest, decision: SecretDecision): AuditRecord {
  return {
    ...requestFieldsOf(request),
    decision: decision.allowed ? 'allowed' : 'denied',
    name: request.name || metadataString(request.oldObject, 'name') || metadataString(request.object, 'name') || '',
    reason: decision.reason,
    pvc: decision.pvc ? `${decision.pvc.namespace}/${decision.pvc.name}` : null,
    message: decision.message ?? decision.warnings.join(' '),
    ...(decision.verification ? { verification: decision.verification } : {}),
  };
}

function secretUidOf(request: AdmissionRequest): string | undefined {
  return metadataString(request.oldObject, 'uid') ?? metadataString(request.object, 'uid');
}
