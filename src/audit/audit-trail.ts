// The audit trail of Secret decisions: one JSON log line per record and, unless dry-run, a Warning
// Event on the Secret. Only names, codes and the operator message are recorded, never Secret data.
import type { Logger } from 'pino';
import type { AdmissionRequest, Operation, ReasonCode, VerificationOutcome } from '../admission/types.js';
import type { SecretEventRecorder } from './event-recorder.js';

export interface AuditRecord {
  decision: 'denied' | 'allowed';
  uid: string;
  user: string;
  groups: string[];
  operation: Operation;
  namespace: string;
  name: string;
  reason: ReasonCode;
  /** `namespace/name` of the PVC the decision was about, or null. */
  pvc: string | null;
  dryRun: boolean;
  message: string;
  /** For a password change under the PVC: what the release's PostgreSQL answered (accepted, rejected, ...). */
  verification?: VerificationOutcome;
}

/** The audit record of a Dify pod template (or last-applied annotation) with findings: names only, never values. */
export interface TemplateAuditRecord {
  decision: 'denied' | 'allowed';
  uid: string;
  user: string;
  groups: string[];
  operation: Operation;
  kind: string;
  namespace: string;
  name: string;
  mode: 'warn' | 'deny';
  findings: { container: string; variable: string; finding: string }[];
  dryRun: boolean;
}

/** The fields of an audit record that say which request it was and who sent it. */
export function requestFieldsOf(
  request: AdmissionRequest,
): Pick<AuditRecord, 'uid' | 'user' | 'groups' | 'operation' | 'namespace' | 'dryRun'> {
  return {
    uid: request.uid,
    user: request.userInfo.username ?? '',
    groups: request.userInfo.groups ?? [],
    operation: request.operation,
    namespace: request.namespace ?? '',
    dryRun: request.dryRun === true,
  };
}

/** Writes one template audit line (warn level, like every audit record). */
export function recordTemplateAudit(log: Logger, entry: TemplateAuditRecord): void {
  const { decision, uid, user, groups, operation, kind, namespace, name, mode, findings, dryRun } = entry;
  log.warn(
    { audit: true, decision, uid, user, groups, operation, kind, namespace, name, mode, findings, dryRun },
    decision === 'denied' ? 'Dify pod template refused' : 'Dify pod template stores what it should not',
  );
}

/** Where the server sends audit records; injected, so tests can capture them. */
export interface AuditSink {
  /** Never throws and never waits: the admission answer does not depend on it. */
  record(entry: AuditRecord, secret?: { uid?: string }): void;
}

export interface AuditTrailOptions {
  log: Logger;
  /** Absent when Events are disabled. */
  events?: SecretEventRecorder;
}

export function createAuditTrail(options: AuditTrailOptions): AuditSink {
  const log = options.log.child({ audit: true });
  return {
    record(entry, secret) {
      // The fields are listed one by one so that nothing else can ever slip into the line.
      const { decision, uid, user, groups, operation, namespace, name, reason, pvc, dryRun, message, verification } =
        entry;
      const answered = verification ? { verification } : {};
      log.warn(
        { decision, uid, user, groups, operation, namespace, name, reason, pvc, dryRun, message, ...answered },
        decision === 'denied' ? 'Secret change denied' : 'Secret change allowed under audit',
      );
      if (dryRun || !options.events) return;
      options.events.record({
        namespace,
        secretName: name,
        secretUid: secret?.uid,
        reason,
        action: `${decision === 'denied' ? 'Deny' : 'Allow'}${operation.charAt(0)}${operation.slice(1).toLowerCase()}`,
        // Who made the change comes first, so the note's 1 KiB limit never cuts it off.
        note: `${user || 'unknown user'}: ${message}`,
      });
    },
  };
}
