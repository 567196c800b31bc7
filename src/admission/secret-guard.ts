// The PostgreSQL Secret rules (docs/rules.md#postgresql-secret-rules): the password cannot change while the release's PVC
// exists, unless the release's PostgreSQL already accepts the new one (rotated in the database first). Pure: the PVC
// state comes from the injected pvcStateOf, asked only when it matters; the database's answer is an input.
import { Buffer } from 'node:buffer';
import { LABELS, SECRET_KEYS, contract, expandName } from '../contract.js';
import { secretMessages, secretWarnings, type PasswordKeyChanges, type SecretMessageContext } from './messages.js';
import { asObject, metadataOf, nonEmptyString, stringMapOf } from './raw-json.js';
import { releaseFromName, type GuardSettings } from './settings.js';
import type {
  AdmissionRequest,
  JsonObject,
  PasswordCheck,
  PasswordVerification,
  PvcStateOf,
  SecretChange,
  SecretDecision,
} from './types.js';

export type { SecretChange, PvcStateOf } from './types.js';

/** The two keys that must both hold the PostgreSQL password (`password` is the compatibility copy). */
export const PASSWORD_KEYS = [SECRET_KEYS.postgresPassword, SECRET_KEYS.password] as const;

/** The SecretChange of one admission request (what the /validate/secrets route passes on). */
export function secretChangeFromRequest(request: AdmissionRequest): SecretChange {
  return {
    operation: request.operation,
    namespace: request.namespace ?? '',
    oldSecret: request.oldObject ?? null,
    newSecret: request.object ?? null,
    dryRun: request.dryRun === true,
  };
}

/**
 * The decision on one Secret request. `verification` is the database's answer for this request's new password,
 * when the transport asked it (it does so only when a decision without it says `verify`).
 */
export function judgeSecretChange(
  change: SecretChange,
  settings: GuardSettings,
  pvcStateOf: PvcStateOf,
  verification?: PasswordVerification,
): SecretDecision {
  const { operation, oldSecret, newSecret } = change;
  // UPDATE and DELETE are judged by what the Secret was; relabelling it in the same request changes nothing.
  const subject = operation === 'CREATE' ? newSecret : (oldSecret ?? newSecret);
  const secretName = subject ? nameOf(subject) : '';
  const release = subject ? releaseOf(subject, settings) : undefined;
  if (
    release === undefined ||
    secretName === '' ||
    !['CREATE', 'UPDATE', 'DELETE'].includes(operation) ||
    expandName(settings.postgresqlSecretTemplate, release) !== secretName
  ) {
    return { allowed: true, reason: 'NotGuarded', warnings: [], audit: false };
  }

  const namespace = change.namespace || namespaceOf(subject);
  const pvc = { namespace, name: expandName(settings.postgresqlPvcTemplate, release) };
  const context: SecretMessageContext = { namespace, secret: secretName, pvc: pvc.name, release };
  const newPasswords = newSecret ? passwordsOf(newSecret) : undefined;

  const diverge = (): SecretDecision => ({
    allowed: false,
    reason: 'PasswordKeysDiverge',
    message: secretMessages.keysDiverge(context),
    warnings: [],
    audit: true,
  });
  const keysDifferAfter = operation !== 'DELETE' && newPasswords !== undefined && keysDiverge(newPasswords);
  if (keysDifferAfter && operation !== 'UPDATE') return diverge();

  if (operation === 'DELETE' || operation === 'CREATE') {
    const state = pvcStateOf(pvc.namespace, pvc.name);
    if (state === 'absent') return { allowed: true, reason: 'NoPvc', warnings: [], pvc, audit: false };
    // Allowed so that uninstall and reinstall work, an unverifiable PVC counted as present; audited,
    // because a DELETE or a reinstall over old data is what explains a later 28P01.
    const underPvc =
      operation === 'DELETE'
        ? { reason: 'DeleteUnderPvc' as const, warning: secretWarnings.deleteUnderPvc(context) }
        : { reason: 'CreateOverPvc' as const, warning: secretWarnings.createOverPvc(context) };
    return {
      allowed: true,
      reason: state === 'present' ? underPvc.reason : 'PvcStateUnknown',
      warnings: [state === 'present' ? underPvc.warning : secretWarnings.pvcStateUnknown(context)],
      pvc,
      audit: true,
    };
  }

  // UPDATE
  const keyChanges =
    oldSecret && newPasswords ? passwordKeyChanges(passwordsOf(oldSecret), newPasswords) : { changed: [], removed: [] };
  const passwordTouched = keyChanges.changed.length + keyChanges.removed.length > 0;
  const guardRemoved =
    oldSecret !== null && newSecret !== null && guardLabelsRemoved(oldSecret, newSecret, release, settings);
  if (!passwordTouched && !guardRemoved) {
    return keysDifferAfter ? diverge() : { allowed: true, reason: 'PasswordUnchanged', warnings: [], audit: false };
  }
  const state = pvcStateOf(pvc.namespace, pvc.name);
  // One key changed alone is refused either way; under the PVC the refusal names the PVC that blocks it.
  if (keysDifferAfter && !(state === 'present' && passwordTouched)) return diverge();
  if (state === 'absent') return { allowed: true, reason: 'NoPvc', warnings: [], pvc, audit: false };
  if (state !== 'present') {
    return {
      allowed: false,
      reason: 'PvcStateUnknown',
      message: secretMessages.pvcStateUnknown(context),
      warnings: [],
      pvc,
      audit: true,
    };
  }
  if (passwordTouched) {
    // Only a plain rotation is asked about: not diverging or removed keys, not one that also drops the guard labels.
    const verifiable =
      !keysDifferAfter &&
      !guardRemoved &&
      keyChanges.removed.length === 0 &&
      passwordCheckOf(change, settings) !== undefined;
    return passwordChangeUnderPvc(context, keyChanges, pvc, verifiable, verification);
  }
  return {
    allowed: false,
    reason: 'GuardLabelsRemovedUnderPvc',
    message: secretMessages.guardLabelsRemovedUnderPvc(context),
    warnings: [],
    pvc,
    audit: true,
  };
}

/** A password change under the PVC: allowed only when the database already accepts the new password. */
function passwordChangeUnderPvc(
  context: SecretMessageContext,
  keyChanges: PasswordKeyChanges,
  pvc: { namespace: string; name: string },
  verifiable: boolean,
  verification: PasswordVerification | undefined,
): SecretDecision {
  if (verifiable && verification?.outcome === 'accepted') {
    return {
      allowed: true,
      reason: 'PasswordRotationVerified',
      message: secretMessages.rotationVerified(context),
      warnings: [secretWarnings.rotationVerified()],
      pvc,
      audit: true,
      verification: 'accepted',
    };
  }
  return {
    allowed: false,
    reason: 'PasswordChangeUnderPvc',
    message: secretMessages.passwordChangeUnderPvc(context, keyChanges, verifiable, verification),
    warnings: [],
    pvc,
    audit: true,
    ...(verifiable && verification === undefined ? { verify: true } : {}),
    ...(verifiable && verification ? { verification: verification.outcome } : {}),
  };
}

/**
 * What to ask the database for an UPDATE of a guarded Secret: its release, the Secret's user and database, and the
 * new password. Undefined when the new Secret lacks one of them (then nothing can be verified).
 */
export function passwordCheckOf(change: SecretChange, settings: GuardSettings): PasswordCheck | undefined {
  const { oldSecret, newSecret } = change;
  const subject = oldSecret ?? newSecret;
  if (!subject || !newSecret) return undefined;
  const release = releaseOf(subject, settings);
  const values = valuesOf(newSecret, [SECRET_KEYS.postgresUsername, SECRET_KEYS.postgresDatabase, ...PASSWORD_KEYS]);
  const text = (key: string): string | undefined => values.get(key)?.toString('utf8');
  const password = text(SECRET_KEYS.postgresPassword) ?? text(SECRET_KEYS.password);
  const user = text(SECRET_KEYS.postgresUsername);
  const database = text(SECRET_KEYS.postgresDatabase);
  if (release === undefined || !password || !user || !database) return undefined;
  // The login checked must be the one Dify keeps using: a request that also changes the user or database is not a rotation.
  if (oldSecret && !sameLogin(oldSecret, values)) return undefined;
  const namespace = change.namespace || namespaceOf(subject);
  return { namespace, release, secretKey: `${namespace}/${nameOf(subject)}`, user, database, password };
}

function sameLogin(oldSecret: JsonObject, after: Map<string, Buffer>): boolean {
  const before = valuesOf(oldSecret, [SECRET_KEYS.postgresUsername, SECRET_KEYS.postgresDatabase]);
  return [SECRET_KEYS.postgresUsername, SECRET_KEYS.postgresDatabase].every((key) => {
    const old = before.get(key);
    const next = after.get(key);
    return old !== undefined && next !== undefined && old.equals(next);
  });
}

type Passwords = Map<string, Buffer>;

/** Decoded password keys; stringData (normally merged by the API server already) overrides data. */
function passwordsOf(secret: JsonObject): Passwords {
  return valuesOf(secret, PASSWORD_KEYS);
}

function valuesOf(secret: JsonObject, keys: readonly string[]): Map<string, Buffer> {
  const data = asObject(secret.data) ?? {};
  const stringData = asObject(secret.stringData) ?? {};
  const values = new Map<string, Buffer>();
  for (const key of keys) {
    const plain = stringData[key];
    const encoded = data[key];
    if (typeof plain === 'string') values.set(key, Buffer.from(plain, 'utf8'));
    else if (typeof encoded === 'string') values.set(key, Buffer.from(encoded, 'base64'));
  }
  return values;
}

function keysDiverge(passwords: Passwords): boolean {
  const [first, second] = PASSWORD_KEYS.map((key) => passwords.get(key));
  return first !== undefined && second !== undefined && !first.equals(second);
}

/** Which password keys an UPDATE changes or removes. */
function passwordKeyChanges(before: Passwords, after: Passwords): PasswordKeyChanges {
  const changes: PasswordKeyChanges = { changed: [], removed: [] };
  for (const key of PASSWORD_KEYS) {
    const old = before.get(key);
    const next = after.get(key);
    if (old !== undefined && next === undefined) changes.removed.push(key);
    else if (next !== undefined && (old === undefined ? !isCopyOfOtherKey(key, next, before) : !old.equals(next))) {
      changes.changed.push(key);
    }
  }
  return changes;
}

// Adding the compatibility key with the existing password (or the reverse) changes no password.
function isCopyOfOtherKey(key: string, value: Buffer, before: Passwords): boolean {
  const other = PASSWORD_KEYS.find((k) => k !== key);
  const otherValue = other === undefined ? undefined : before.get(other);
  return otherValue !== undefined && otherValue.equals(value);
}

/** True when the new object would no longer be selected and guarded as this release's Secret. */
function guardLabelsRemoved(
  oldSecret: JsonObject,
  newSecret: JsonObject,
  release: string,
  settings: GuardSettings,
): boolean {
  if (!carriesGuardLabels(oldSecret)) return false;
  return !carriesGuardLabels(newSecret) || releaseOf(newSecret, settings) !== release;
}

function carriesGuardLabels(secret: JsonObject): boolean {
  const labels = labelsOf(secret);
  return (
    labels[LABELS.name] === contract.values.difyName && labels[LABELS.component] === contract.components.postgresql
  );
}

/** The instance label, else the release read back from the Secret's name. */
function releaseOf(secret: JsonObject, settings: GuardSettings): string | undefined {
  const instance = labelsOf(secret)[LABELS.instance];
  if (typeof instance === 'string' && instance !== '') return instance;
  return releaseFromName(settings.postgresqlSecretTemplate, nameOf(secret));
}

function labelsOf(object: JsonObject): Record<string, unknown> {
  return stringMapOf(object, 'labels');
}

function nameOf(object: JsonObject): string {
  return nonEmptyString(metadataOf(object).name) ?? '';
}

function namespaceOf(object: JsonObject | null): string {
  return nonEmptyString(metadataOf(object).namespace) ?? '';
}
