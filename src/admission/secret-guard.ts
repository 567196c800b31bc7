// The PostgreSQL Secret rules (docs/rules.md#postgresql-secret-rules): the password cannot change while the release's PVC
// exists, unless the release's PostgreSQL already accepts the new one (rotated in the database first). Pure: the PVC
// state comes from the injected pvcStateOf, asked only when it matters; the database's answer is an input.
// CREATE, UPDATE and DELETE are judged apart (as controller-runtime's CustomValidator does); an UPDATE goes through
// UPDATE_CHECKS, a list of small checks asked in a stated order.
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
  PvcState,
  PvcStateOf,
  ReasonCode,
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

type PvcRef = NonNullable<SecretDecision['pvc']>;

/** A request on a guarded Secret: the release's PostgreSQL Secret, with its PVC. */
interface GuardedRequest {
  change: SecretChange;
  settings: GuardSettings;
  release: string;
  pvc: PvcRef;
  context: SecretMessageContext;
  /** The PVC's state, asked of pvcStateOf the first time a check needs it, then remembered. */
  pvcState: () => PvcState;
  verification: PasswordVerification | undefined;
}

type Judge = (request: GuardedRequest) => SecretDecision;

/** One judge per operation (controller-runtime's ValidateCreate, ValidateUpdate, ValidateDelete); CONNECT is not guarded. */
const JUDGES: ReadonlyMap<string, Judge> = new Map([
  ['CREATE', judgeCreate],
  ['UPDATE', judgeUpdate],
  ['DELETE', judgeDelete],
]);

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
  const judge = JUDGES.get(change.operation);
  const guarded = judge ? guardedSecretOf(change, settings) : undefined;
  if (!judge || !guarded) return { allowed: true, reason: 'NotGuarded', warnings: [], audit: false };
  const pvcState = remembered(() => pvcStateOf(guarded.pvc.namespace, guarded.pvc.name));
  return judge({ ...guarded, change, settings, pvcState, verification });
}

/** The release and PVC of the Secret a request is about, when it is a release's PostgreSQL Secret. */
function guardedSecretOf(
  change: SecretChange,
  settings: GuardSettings,
): Pick<GuardedRequest, 'release' | 'pvc' | 'context'> | undefined {
  // UPDATE and DELETE are judged by what the Secret was; relabelling it in the same request changes nothing.
  const subject = change.operation === 'CREATE' ? change.newSecret : (change.oldSecret ?? change.newSecret);
  const release = subject ? guardedRelease(subject, settings) : undefined;
  if (!subject || release === undefined) return undefined;
  const namespace = change.namespace || namespaceOf(subject);
  const pvc = { namespace, name: expandName(settings.postgresqlPvcTemplate, release) };
  return { release, pvc, context: { namespace, secret: nameOf(subject), pvc: pvc.name, release } };
}

/** The release whose PostgreSQL Secret this is (by its name template), else undefined. */
function guardedRelease(secret: JsonObject, settings: GuardSettings): string | undefined {
  const secretName = nameOf(secret);
  const release = releaseOf(secret, settings);
  if (release === undefined || secretName === '') return undefined;
  return expandName(settings.postgresqlSecretTemplate, release) === secretName ? release : undefined;
}

function remembered<T>(read: () => T): () => T {
  let answer: { value: T } | undefined;
  return () => (answer ??= { value: read() }).value;
}

// ---- CREATE and DELETE ---------------------------------------------------------------------------

/** A new Secret must hold one password in both keys; over an existing PVC it is allowed, audited. */
function judgeCreate(request: GuardedRequest): SecretDecision {
  const { newSecret } = request.change;
  if (newSecret && keysDiverge(passwordsOf(newSecret))) return keysDivergeRefusal(request);
  return allowedOverPvc(request, 'CreateOverPvc', secretWarnings.createOverPvc(request.context));
}

function judgeDelete(request: GuardedRequest): SecretDecision {
  return allowedOverPvc(request, 'DeleteUnderPvc', secretWarnings.deleteUnderPvc(request.context));
}

/**
 * Allowed so that uninstall and reinstall work, an unverifiable PVC counted as present; audited,
 * because a DELETE or a reinstall over old data is what explains a later 28P01.
 */
function allowedOverPvc(
  request: GuardedRequest,
  reason: 'CreateOverPvc' | 'DeleteUnderPvc',
  warning: string,
): SecretDecision {
  const { pvc, context } = request;
  const state = request.pvcState();
  if (state === 'absent') return { allowed: true, reason: 'NoPvc', warnings: [], pvc, audit: false };
  return {
    allowed: true,
    reason: state === 'present' ? reason : 'PvcStateUnknown',
    warnings: [state === 'present' ? warning : secretWarnings.pvcStateUnknown(context)],
    pvc,
    audit: true,
  };
}

// ---- UPDATE --------------------------------------------------------------------------------------

/** What an UPDATE does to the guarded Secret (names of keys only, never values). */
interface UpdateFacts extends GuardedRequest {
  keyChanges: PasswordKeyChanges;
  /** The request changes or removes a password key. */
  passwordTouched: boolean;
  /** The request takes the Secret out of the guard (its guard labels or release). */
  guardRemoved: boolean;
  /** The two password keys would hold different passwords after the request. */
  keysDivergeAfter: boolean;
}

/** One step of an UPDATE's judgement: a decision, or undefined to pass on to the next check. */
type UpdateCheck = (facts: UpdateFacts) => SecretDecision | undefined;

/**
 * The UPDATE checks, asked in this order; the first that decides wins. The PVC is asked only once a request changes
 * a password or the guard labels. What none of them decides is UPDATE_OTHERWISE.
 */
const UPDATE_CHECKS: readonly UpdateCheck[] = [
  passwordKeysDiverge,
  passwordUnchanged,
  noPvc,
  pvcStateUnknown,
  passwordChangeUnderPvc,
];

/** Left when no check decided: the request removes the guard labels, changes no password, under the PVC. */
const UPDATE_OTHERWISE = guardLabelsRemovedUnderPvc;

function judgeUpdate(request: GuardedRequest): SecretDecision {
  const facts = updateFactsOf(request);
  for (const check of UPDATE_CHECKS) {
    const decision = check(facts);
    if (decision) return decision;
  }
  return UPDATE_OTHERWISE(facts);
}

function updateFactsOf(request: GuardedRequest): UpdateFacts {
  const { oldSecret, newSecret } = request.change;
  const newPasswords = newSecret ? passwordsOf(newSecret) : undefined;
  const keyChanges =
    oldSecret && newPasswords ? passwordKeyChanges(passwordsOf(oldSecret), newPasswords) : { changed: [], removed: [] };
  return {
    ...request,
    keyChanges,
    passwordTouched: keyChanges.changed.length + keyChanges.removed.length > 0,
    guardRemoved:
      oldSecret !== null &&
      newSecret !== null &&
      guardLabelsRemoved(oldSecret, newSecret, request.release, request.settings),
    keysDivergeAfter: newPasswords !== undefined && keysDiverge(newPasswords),
  };
}

/**
 * One key changed alone is refused either way; under the PVC, a request that changes a password gets the refusal
 * that names the PVC instead (passwordChangeUnderPvc).
 */
function passwordKeysDiverge(facts: UpdateFacts): SecretDecision | undefined {
  if (!facts.keysDivergeAfter) return undefined;
  const changesGuarded = facts.passwordTouched || facts.guardRemoved;
  if (changesGuarded && facts.pvcState() === 'present' && facts.passwordTouched) return undefined;
  return keysDivergeRefusal(facts);
}

/** Neither a password nor the guard labels change: allowed without asking the PVC. */
function passwordUnchanged(facts: UpdateFacts): SecretDecision | undefined {
  if (facts.passwordTouched || facts.guardRemoved) return undefined;
  return { allowed: true, reason: 'PasswordUnchanged', warnings: [], audit: false };
}

function noPvc(facts: UpdateFacts): SecretDecision | undefined {
  if (facts.pvcState() !== 'absent') return undefined;
  return { allowed: true, reason: 'NoPvc', warnings: [], pvc: facts.pvc, audit: false };
}

/** The PVC may exist: a change of the password or its guard is refused until the cache knows. */
function pvcStateUnknown(facts: UpdateFacts): SecretDecision | undefined {
  if (facts.pvcState() === 'present') return undefined;
  return refusal('PvcStateUnknown', secretMessages.pvcStateUnknown(facts.context), facts.pvc);
}

/** A password change under the PVC: allowed only when the database already accepts the new password. */
function passwordChangeUnderPvc(facts: UpdateFacts): SecretDecision | undefined {
  if (!facts.passwordTouched) return undefined;
  const { context, keyChanges, pvc, verification } = facts;
  const verifiable = isPlainRotation(facts);
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
    ...refusal(
      'PasswordChangeUnderPvc',
      secretMessages.passwordChangeUnderPvc(context, keyChanges, verifiable, verification),
      pvc,
    ),
    ...(verifiable && verification === undefined ? { verify: true } : {}),
    ...(verifiable && verification ? { verification: verification.outcome } : {}),
  };
}

/** Only a plain rotation is asked about: not diverging or removed keys, not one that also drops the guard labels. */
function isPlainRotation(facts: UpdateFacts): boolean {
  return (
    !facts.keysDivergeAfter &&
    !facts.guardRemoved &&
    facts.keyChanges.removed.length === 0 &&
    passwordCheckOf(facts.change, facts.settings) !== undefined
  );
}

function guardLabelsRemovedUnderPvc(facts: UpdateFacts): SecretDecision {
  return refusal('GuardLabelsRemovedUnderPvc', secretMessages.guardLabelsRemovedUnderPvc(facts.context), facts.pvc);
}

function keysDivergeRefusal(request: GuardedRequest): SecretDecision {
  return refusal('PasswordKeysDiverge', secretMessages.keysDiverge(request.context));
}

/** Every refusal is audited and carries the whole message; `pvc` when the PVC was looked at. */
function refusal(reason: ReasonCode, message: string, pvc?: PvcRef): SecretDecision {
  return { allowed: false, reason, message, warnings: [], ...(pvc ? { pvc } : {}), audit: true };
}

// ---- the database check --------------------------------------------------------------------------

const LOGIN_KEYS = [SECRET_KEYS.postgresUsername, SECRET_KEYS.postgresDatabase] as const;

/**
 * What to ask the database for an UPDATE of a guarded Secret: its release, the Secret's user and database, and the
 * new password. Undefined when the new Secret lacks one of them (then nothing can be verified).
 */
export function passwordCheckOf(change: SecretChange, settings: GuardSettings): PasswordCheck | undefined {
  const { oldSecret, newSecret } = change;
  const subject = oldSecret ?? newSecret;
  if (!subject || !newSecret) return undefined;
  const release = releaseOf(subject, settings);
  const values = valuesOf(newSecret, [...LOGIN_KEYS, ...PASSWORD_KEYS]);
  const login = loginOf(values);
  if (release === undefined || !login) return undefined;
  // The login checked must be the one Dify keeps using: a request that also changes the user or database is not a rotation.
  if (oldSecret && !sameLogin(oldSecret, values)) return undefined;
  const namespace = change.namespace || namespaceOf(subject);
  return { namespace, release, secretKey: `${namespace}/${nameOf(subject)}`, ...login };
}

/** The user, database and password a Secret holds, when it holds all three. */
function loginOf(values: Map<string, Buffer>): Pick<PasswordCheck, 'user' | 'database' | 'password'> | undefined {
  const text = (key: string): string | undefined => values.get(key)?.toString('utf8');
  const password = text(SECRET_KEYS.postgresPassword) ?? text(SECRET_KEYS.password);
  const user = text(SECRET_KEYS.postgresUsername);
  const database = text(SECRET_KEYS.postgresDatabase);
  return password && user && database ? { user, database, password } : undefined;
}

function sameLogin(oldSecret: JsonObject, after: Map<string, Buffer>): boolean {
  const before = valuesOf(oldSecret, LOGIN_KEYS);
  return LOGIN_KEYS.every((key) => {
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
