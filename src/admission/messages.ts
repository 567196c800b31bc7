// Every sentence that dify-guard shows to an operator: admission warnings and denial messages.
// None of them takes a Secret value as input, so none can leak one.
import { ENV, LABELS, SECRET_KEYS, contract, expandName } from '../contract.js';
import type { PasswordVerification, VerificationOutcome } from './types.js';

/** The API server may truncate longer warnings (AdmissionReview v1). */
export const MAX_WARNING_LENGTH = 120;

const SOURCE = 'dify-guard: ';

/** Prefixes a warning with its source and keeps it within MAX_WARNING_LENGTH. */
export function warning(text: string): string {
  const full = SOURCE + text;
  return full.length <= MAX_WARNING_LENGTH ? full : `${full.slice(0, MAX_WARNING_LENGTH - 1)}…`;
}

const objectRef = (namespace: string, name: string): string => (namespace ? `${namespace}/${name}` : name);

// ---- pods ----------------------------------------------------------------------------------------

/** How an owned env var holding a password was brought to the right Secret reference. */
export type RefFix = 'added' | 'literal' | 'redirected';

export const podWarnings = {
  noRelease: (component: string): string =>
    warning(`${component} pod has no ${LABELS.instance} label: credentials not injected`),
  migrationForced: (where: string): string =>
    warning(`${where}: ${ENV.migrationEnabled} forced to "false" (the migration Job migrates)`),
  secretRef: (where: string, envName: string, fix: RefFix, secret: string, key: string): string => {
    const what = { added: 'added', literal: 'literal', redirected: 'wrong ref' }[fix];
    return warning(`${where}: ${envName} ${what} -> Secret ${secret} key ${key}`);
  },
  brokerPassword: (where: string, envName: string): string =>
    warning(`${where}: password in ${envName} replaced by $(${ENV.redisPassword})`),
  redisPasswordMoved: (where: string, before: string): string =>
    warning(`${where}: ${ENV.redisPassword} moved before ${before}, which uses it`),
  redisEndpointAdded: (where: string, names: readonly string[]): string =>
    warning(`${where}: ${names.join(', ')} added`),
  secretUnknown: (where: string, envName: string, annotation: string): string =>
    warning(`${where}: ${envName} is literal; add annotation ${annotation}`),
};

// ---- pod templates --------------------------------------------------------------------------------

const listed = (names: readonly string[]): string => names.join(', ');

export const templateMessages = {
  passwordWarning: (kind: string, variables: readonly string[]): string =>
    warning(`${kind} stores ${listed(variables)} as literal; use valueFrom.secretKeyRef`),
  migrationWarning: (kind: string): string =>
    warning(`${kind} sets ${ENV.migrationEnabled} other than "false"; set "false" (a Job migrates)`),
  lastAppliedWarning: (variables: readonly string[]): string =>
    warning(`last-applied-configuration stores ${listed(variables)} as literal; use secretKeyRef`),
  refusal: (kind: string, name: string, passwords: readonly string[], migration: boolean): string => {
    const problems: string[] = [];
    if (passwords.length > 0) {
      problems.push(
        `its pod template stores ${listed(passwords)} as a literal password, readable by anyone who can read this ${kind}`,
      );
    }
    if (migration) {
      problems.push(
        `its pod template sets ${ENV.migrationEnabled} to something other than "false", ` +
          'so its pods would migrate the database on start',
      );
    }
    return (
      `${kind} ${name}: refused by dify-guard (webhook.templatePolicy=deny): ${problems.join('; and ')}. ` +
      "Give each password with valueFrom.secretKeyRef (the release's Secret), " +
      `set ${ENV.migrationEnabled} to "false" (the chart's migration Job migrates), then apply again.`
    );
  },
};

// ---- the PostgreSQL Secret ---------------------------------------------------------------------

const PASSWORD_KEYS = `${SECRET_KEYS.postgresPassword} and ${SECRET_KEYS.password}`;

/** Which password keys an UPDATE changes and which it removes (names only, never values). */
export interface PasswordKeyChanges {
  changed: string[];
  removed: string[];
}

/** "changes postgres-password and password", "removes password", ... */
export function describeKeyChanges({ changed, removed }: PasswordKeyChanges): string {
  const parts: string[] = [];
  if (changed.length > 0) parts.push(`changes ${changed.join(' and ')}`);
  if (removed.length > 0) parts.push(`removes ${removed.join(' and ')}`);
  return parts.join(' and ');
}

export interface SecretMessageContext {
  namespace: string;
  secret: string;
  pvc: string;
  release: string;
}

/** The release's PostgreSQL pod (its StatefulSet's first and only pod). */
const postgresqlPod = (c: SecretMessageContext): string => `${expandName(contract.names.postgresql, c.release)}-0`;

/** How to change the password in the database without putting it on a command line (psql asks for it twice). */
const rotateInDatabase = (c: SecretMessageContext): string =>
  `\`kubectl exec -it -n ${c.namespace} ${postgresqlPod(c)} -c ${contract.components.postgresql} -- ` +
  `sh -c 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB"'\`, type \`\\password\` at its prompt and enter the new password there ` +
  '(never in an ALTER ROLE on a command line, where it would stay in the shell history and the server log)';

const CANNOT_ASK =
  `dify-guard cannot ask the database: that needs ${SECRET_KEYS.postgresUsername} and ${SECRET_KEYS.postgresDatabase} ` +
  'unchanged in the Secret, both password keys set to the same new value, and the guard labels kept.';

const NOT_ASKED = 'dify-guard has not asked the database about this password.';

const whereAsked = (v: PasswordVerification): string =>
  `the release's PostgreSQL${v.address ? ` at ${v.address}` : ''}`;

/** What the database's answer says to the operator, by outcome (an accepted password is never refused). */
const ANSWER_SENTENCES: Readonly<
  Record<VerificationOutcome, (c: SecretMessageContext, v: PasswordVerification) => string>
> = {
  accepted: () => NOT_ASKED,
  rejected: (_c, v) =>
    `dify-guard asked ${whereAsked(v)}: it does not accept this password yet (${v.detail ?? '28P01'}).`,
  unreachable: (c, v) =>
    `dify-guard cannot verify this password: ${whereAsked(v)} could not be asked within ${v.timeoutMs ?? '?'} ms ` +
    `(${v.detail ?? 'error'}), so the change is refused for now. Check that pod ${objectRef(c.namespace, postgresqlPod(c))} ` +
    'is Running and Ready, that its Service exists, and that NetworkPolicies let dify-guard reach its port ' +
    '(networkPolicy.postgresql.allowDifyGuard); then apply the change again.',
  'rate-limited': (_c, v) =>
    `dify-guard did not ask the database: this Secret had ${v.limitPerMinute ?? 'too many'} password checks in the last minute ` +
    `(a limit that keeps dify-guard from serving to guess passwords). Retry in ${v.retryAfterSeconds ?? 60} s.`,
};

/** The sentence saying what the database answered, or why it was not asked. */
function verificationSentence(
  c: SecretMessageContext,
  verifiable: boolean,
  v: PasswordVerification | undefined,
): string {
  if (!verifiable) return CANNOT_ASK;
  return v ? ANSWER_SENTENCES[v.outcome](c, v) : NOT_ASKED;
}

export const secretMessages = {
  passwordChangeUnderPvc: (
    c: SecretMessageContext,
    keys: PasswordKeyChanges,
    verifiable = false,
    verification?: PasswordVerification,
  ): string =>
    `Secret ${objectRef(c.namespace, c.secret)}: the PostgreSQL password cannot change while ` +
    `PVC ${objectRef(c.namespace, c.pvc)} exists (this request ${describeKeyChanges(keys)}), ` +
    'unless the database already accepts the new password. ' +
    `${verificationSentence(c, verifiable, verification)} ` +
    'PostgreSQL keeps the password it was initialised with in that volume and ignores the Secret afterwards, ' +
    'so every Dify component (api, worker, plugin daemon, migration Job) would fail to log in with error 28P01. ' +
    'Ways out: ' +
    `(1) rotate without losing data: change the password in the database first, with ${rotateInDatabase(c)}; ` +
    'then apply this change again (dify-guard checks the new password against the database and lets it through) ' +
    'and restart the Dify pods; ' +
    '(2) keep the old password: restore it in the Secret, or re-run deploy.sh with the original POSTGRES_PASSWORD; ' +
    '(3) if the data may be lost, delete the PVC, which DELETES ALL DIFY DATA, ' +
    `with \`kubectl delete pvc -n ${c.namespace} ${c.pvc}\`, then redeploy with the new POSTGRES_PASSWORD.`,

  rotationVerified: (c: SecretMessageContext): string =>
    `Secret ${objectRef(c.namespace, c.secret)}: PostgreSQL password changed under PVC ${objectRef(c.namespace, c.pvc)}, ` +
    "allowed because the release's PostgreSQL already accepts the new password (rotated in the database first). " +
    'Restart the Dify pods (api, worker, beat, plugin daemon) so that they read it.',

  keysDiverge: (c: SecretMessageContext): string =>
    `Secret ${objectRef(c.namespace, c.secret)}: keys ${PASSWORD_KEYS} would hold different passwords. ` +
    `Both must hold the same value (${SECRET_KEYS.password} is a copy of ${SECRET_KEYS.postgresPassword} ` +
    'kept for compatibility); set them to the same value.',

  guardLabelsRemovedUnderPvc: (c: SecretMessageContext): string =>
    `Secret ${objectRef(c.namespace, c.secret)}: this request removes or changes the labels ` +
    `${LABELS.name}=${contract.values.difyName}, ${LABELS.component}=${contract.components.postgresql} ` +
    `or ${LABELS.instance} while PVC ${objectRef(c.namespace, c.pvc)} exists. ` +
    'dify-guard uses these labels to protect the PostgreSQL password; removing them would switch the guard off. ' +
    'Keep the labels as they are.',

  pvcStateUnknown: (c: SecretMessageContext): string =>
    `Secret ${objectRef(c.namespace, c.secret)}: refused for now, because dify-guard cannot verify whether ` +
    `PVC ${objectRef(c.namespace, c.pvc)} exists (its PVC cache is not in sync with the API server), ` +
    'and this request could change the PostgreSQL password or its guard. Retry in a few seconds; ' +
    'if this persists, check the dify-guard pods and their logs.',
};

export const secretWarnings = {
  deleteUnderPvc: (c: SecretMessageContext): string =>
    warning(`PVC ${c.pvc} keeps its PostgreSQL password: reinstall with the same POSTGRES_PASSWORD`),
  createOverPvc: (c: SecretMessageContext): string =>
    warning(`PVC ${c.pvc} keeps its old PostgreSQL password: this Secret must hold that same password`),
  rotationVerified: (): string =>
    warning('PostgreSQL accepts the new password: rotation allowed; restart the Dify pods to use it'),
  pvcStateUnknown: (c: SecretMessageContext): string =>
    warning(`cannot verify PVC ${c.pvc}; if it exists it keeps its old PostgreSQL password`),
};
