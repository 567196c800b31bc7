// The shapes that pass between the transport and the pure decision functions.
// Objects stay raw JSON (never typed client models, which drop unknown fields).

export type JsonObject = { [key: string]: unknown };

export type Operation = 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';

/** The parts of an AdmissionReview v1 request that the decisions read. */
export interface AdmissionRequest {
  uid: string;
  kind: { group: string; version: string; kind: string };
  resource: { group: string; version: string; resource: string };
  subResource?: string;
  requestKind?: { group: string; version: string; kind: string };
  name?: string;
  namespace?: string;
  operation: Operation;
  userInfo: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
  object?: JsonObject | null;
  oldObject?: JsonObject | null;
  dryRun?: boolean;
  options?: JsonObject | null;
}

/** A JSON Patch (RFC 6902) operation, as fast-json-patch produces it. */
export interface PatchOperation {
  op: 'add' | 'remove' | 'replace' | 'move' | 'copy' | 'test';
  path: string;
  value?: unknown;
  from?: string;
}

/** One container a mutation changed, and the env names it changed there (names only, for the log). */
export interface PodChange {
  container: string;
  variables: string[];
}

/** Result of mutating a pod: an empty patch means "no change". */
export interface MutationResult {
  patch: PatchOperation[];
  warnings: string[];
  changes: PodChange[];
}

/** Reason codes of the Secret guard; they appear in logs, metrics and audit annotations. */
export type ReasonCode =
  | 'PasswordChangeUnderPvc'
  | 'PasswordRotationVerified'
  | 'PasswordKeysDiverge'
  | 'GuardLabelsRemovedUnderPvc'
  | 'PvcStateUnknown'
  | 'DeleteUnderPvc'
  | 'CreateOverPvc'
  | 'PasswordUnchanged'
  | 'NoPvc'
  | 'NotGuarded';

/** What the cluster cache says about the release's PostgreSQL PVC. */
export type PvcState = 'present' | 'absent' | 'unknown';

export interface SecretDecision {
  allowed: boolean;
  reason: ReasonCode;
  /** For a denial: the whole message the operator sees. */
  message?: string;
  warnings: string[];
  /** The PVC that the decision was about, when one was looked at. */
  pvc?: { namespace: string; name: string };
  /** True when the decision must leave an audit trail (every denial, DELETE under a PVC). */
  audit: boolean;
  /**
   * True when the database could make this password change safe: the transport asks it (passwordCheckOf,
   * then a PasswordVerifier) and judges again with the answer. Until then the decision is the refusal.
   */
  verify?: boolean;
  /** The database's answer this decision rests on, when one was asked. */
  verification?: VerificationOutcome;
}

/** What asking the release's PostgreSQL gave: it accepted the new password, refused it, could not be asked in time, or was not asked. */
export type VerificationOutcome = 'accepted' | 'rejected' | 'unreachable' | 'rate-limited';

/** One verification's result: names, numbers and code names only (SQLSTATE, errno name), never a server message. */
export interface PasswordVerification {
  outcome: VerificationOutcome;
  /** `28P01`, `ECONNREFUSED`, `ENOTFOUND`, `timeout`, ... */
  detail?: string;
  /** The `host:port` asked. */
  address?: string;
  timeoutMs?: number;
  /** For rate-limited: when the next attempt on this Secret will be allowed. */
  retryAfterSeconds?: number;
  /** For rate-limited: attempts allowed per Secret per minute. */
  limitPerMinute?: number;
}

/** What the transport needs to ask the database: the only place the new password leaves the request. */
export interface PasswordCheck {
  namespace: string;
  release: string;
  /** `namespace/name` of the Secret: the rate limit's key. */
  secretKey: string;
  user: string;
  database: string;
  password: string;
}

/** One Secret admission request, as judgeSecretChange reads it (old is null on CREATE, new on DELETE). */
export interface SecretChange {
  operation: Operation;
  namespace: string;
  oldSecret: JsonObject | null;
  newSecret: JsonObject | null;
  dryRun: boolean;
}

/** Answers from the watch-backed PVC cache; never an API call per request. */
export type PvcStateOf = (namespace: string, pvcName: string) => PvcState;
