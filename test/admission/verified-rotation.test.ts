// docs/rules.md#postgresql-secret-rules, the verified-rotation row: a password change under the PVC is allowed only when
// the release's PostgreSQL already accepts the new password. The database's answer is an input of the pure decision.
import t, { type Test } from 'tap';
import { Buffer } from 'node:buffer';
import { LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { judgeSecretChange, passwordCheckOf, secretChangeFromRequest } from '../../src/admission/secret-guard.js';
import { MAX_WARNING_LENGTH } from '../../src/admission/messages.js';
import { defaultGuardSettings } from '../../src/admission/settings.js';
import type { PasswordVerification, PvcState, SecretChange, SecretDecision } from '../../src/admission/types.js';
import { loadReview, sensitiveStringsOf } from '../../harness/fixtures.js';

const settings = defaultGuardSettings;
const NAMESPACE = 'dify';
const PVC = expandName(contract.names.postgresqlPvc, 'dify');
const POD = `${expandName(contract.names.postgresql, 'dify')}-0`;
const update = (): SecretChange => secretChangeFromRequest(loadReview('secret-postgresql-update-password').request);
const secrets = sensitiveStringsOf(loadReview('secret-postgresql-update-password'));

function judge(change: SecretChange, verification?: PasswordVerification, state: PvcState = 'present'): SecretDecision {
  return judgeSecretChange(change, settings, () => state, verification);
}

function assertNoSecret(t: Test, decision: SecretDecision): void {
  const text = JSON.stringify(decision);
  for (const secret of secrets) t.notOk(text.includes(secret), 'no Secret value in the decision');
}

t.test('without an answer, a password change under the PVC is the refusal, marked to be verified', async (t) => {
  const decision = judge(update());
  t.match(decision, { allowed: false, reason: 'PasswordChangeUnderPvc', verify: true, audit: true });
  t.equal(decision.verification, undefined);
  t.match(decision.message, 'has not asked the database');
});

t.test("what to ask: the release, the Secret's user and database, the new password", async (t) => {
  const change = update();
  const check = passwordCheckOf(change, settings)!;
  const data = change.newSecret!.data as Record<string, string>;
  const plain = (key: string): string => Buffer.from(data[key]!, 'base64').toString('utf8');
  t.strictSame(check, {
    namespace: NAMESPACE,
    release: 'dify',
    secretKey: `${NAMESPACE}/dify-postgresql`,
    user: plain(SECRET_KEYS.postgresUsername),
    database: plain(SECRET_KEYS.postgresDatabase),
    password: plain(SECRET_KEYS.postgresPassword),
  });
  const noUser = update();
  delete (noUser.newSecret!.data as Record<string, string>)[SECRET_KEYS.postgresUsername];
  t.equal(passwordCheckOf(noUser, settings), undefined, 'no user: nothing to ask');
  const decision = judge(noUser);
  t.match(decision, { allowed: false, reason: 'PasswordChangeUnderPvc' });
  t.equal(decision.verify, undefined, 'not marked to be verified');
  t.match(decision.message, `needs ${SECRET_KEYS.postgresUsername} and ${SECRET_KEYS.postgresDatabase}`);
});

t.test('accepted: allowed, audited as a verified rotation, with a short warning', async (t) => {
  const decision = judge(update(), { outcome: 'accepted', address: 'dify-postgresql.dify.svc:5432', timeoutMs: 2000 });
  t.match(decision, {
    allowed: true,
    reason: 'PasswordRotationVerified',
    audit: true,
    verification: 'accepted',
    pvc: { namespace: NAMESPACE, name: PVC },
  });
  t.match(decision.message, 'already accepts the new password');
  t.match(decision.message, 'Restart the Dify pods');
  t.equal(decision.warnings.length, 1);
  t.ok(decision.warnings[0]!.length <= MAX_WARNING_LENGTH);
  t.equal(decision.verify, undefined);
  assertNoSecret(t, decision);
});

const refusals: { outcome: PasswordVerification; says: (string | RegExp)[] }[] = [
  {
    outcome: { outcome: 'rejected', detail: '28P01', address: 'dify-postgresql.dify.svc:5432', timeoutMs: 2000 },
    says: ['does not accept this password yet (28P01)', 'at dify-postgresql.dify.svc:5432'],
  },
  {
    outcome: {
      outcome: 'unreachable',
      detail: 'ECONNREFUSED',
      address: 'dify-postgresql.dify.svc:5432',
      timeoutMs: 2000,
    },
    says: [
      'cannot verify this password',
      'could not be asked within 2000 ms (ECONNREFUSED)',
      `pod ${NAMESPACE}/${POD} is Running and Ready`,
      'networkPolicy.postgresql.allowDifyGuard',
      'apply the change again',
    ],
  },
  {
    outcome: { outcome: 'rate-limited', retryAfterSeconds: 17, limitPerMinute: 3 },
    says: ['did not ask the database', '3 password checks in the last minute', 'Retry in 17 s', 'guess passwords'],
  },
];

for (const { outcome, says } of refusals) {
  t.test(
    `${outcome.outcome}: refused under the PVC, saying what the database answered and how to rotate`,
    async (t) => {
      const decision = judge(update(), outcome);
      t.match(decision, {
        allowed: false,
        reason: 'PasswordChangeUnderPvc',
        audit: true,
        verification: outcome.outcome,
      });
      t.equal(decision.verify, undefined, 'judged: nothing more to ask');
      for (const text of says) t.match(decision.message, text);
      t.match(
        decision.message,
        `kubectl exec -it -n ${NAMESPACE} ${POD} -c postgresql -- sh -c 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB"'`,
        'how to rotate in the database: psql in the PostgreSQL pod',
      );
      t.match(decision.message, '`\\password`', "the password typed at psql's prompt, never on a command line");
      t.match(decision.message, '28P01');
      t.match(decision.message, `kubectl delete pvc -n ${NAMESPACE} ${PVC}`, 'the other ways out stay');
      assertNoSecret(t, decision);
    },
  );
}

t.test('no rotation through diverging keys, a removed key, or without the PVC', async (t) => {
  const accepted: PasswordVerification = { outcome: 'accepted' };
  const oneKey = update();
  const oldData = oneKey.oldSecret!.data as Record<string, string>;
  (oneKey.newSecret!.data as Record<string, string>)[SECRET_KEYS.password] = oldData[SECRET_KEYS.password]!;
  t.match(
    judge(oneKey, accepted),
    { allowed: false, reason: 'PasswordChangeUnderPvc' },
    'keys diverge: refused even if accepted',
  );
  t.equal(judge(oneKey).verify, undefined, 'and never asked');
  const removed = update();
  delete (removed.newSecret!.data as Record<string, string>)[SECRET_KEYS.password];
  t.match(judge(removed, accepted), { allowed: false, reason: 'PasswordChangeUnderPvc' }, 'a removed key: refused');
  t.equal(judge(update(), undefined, 'absent').verify, undefined, 'no PVC: allowed without asking');
  t.match(
    judge(update(), undefined, 'unknown'),
    { allowed: false, reason: 'PvcStateUnknown' },
    'PVC unknown: fail closed, not asked',
  );
  t.equal(judge(update(), undefined, 'unknown').verify, undefined);
});

t.test('no rotation that also changes the user or database, or drops the guard labels', async (t) => {
  const accepted: PasswordVerification = { outcome: 'accepted' };
  const otherUser = update();
  (otherUser.newSecret!.data as Record<string, string>)[SECRET_KEYS.postgresUsername] =
    Buffer.from('postgres').toString('base64');
  t.equal(passwordCheckOf(otherUser, settings), undefined, 'another user: nothing to ask');
  t.match(judge(otherUser, accepted), { allowed: false, reason: 'PasswordChangeUnderPvc' });
  t.match(
    judge(otherUser).message,
    `needs ${SECRET_KEYS.postgresUsername} and ${SECRET_KEYS.postgresDatabase} unchanged`,
  );
  const unlabelled = update();
  const labels = (unlabelled.newSecret!.metadata as { labels: Record<string, string> }).labels;
  delete labels[LABELS.component];
  t.equal(judge(unlabelled).verify, undefined, 'the guard labels dropped: never asked');
  t.match(
    judge(unlabelled, accepted),
    { allowed: false, reason: 'PasswordChangeUnderPvc' },
    'and refused even if accepted',
  );
});

t.test('dry run: the same decision for every answer', async (t) => {
  for (const outcome of [undefined, { outcome: 'accepted' }, ...refusals.map((r) => r.outcome)] as (
    PasswordVerification | undefined
  )[]) {
    const dry = update();
    dry.dryRun = true;
    t.strictSame(judge(dry, outcome), judge(update(), outcome), outcome?.outcome ?? 'no answer');
  }
});
