// The table of docs/rules.md#postgresql-secret-rules, line by line, plus the details below it (stringData,
// removed keys, guard labels, fail-closed cache, dryRun, no lookup when nothing changes).
import { Buffer } from 'node:buffer';
import t from 'tap';
import { LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { judgeSecretChange, secretChangeFromRequest, PASSWORD_KEYS } from '../../src/admission/secret-guard.js';
import { MAX_WARNING_LENGTH } from '../../src/admission/messages.js';
import { defaultGuardSettings, type GuardSettings } from '../../src/admission/settings.js';
import type { JsonObject, PvcState, SecretChange, SecretDecision } from '../../src/admission/types.js';
import { fixtureNames, loadReview, sensitiveStringsOf } from '../../harness/fixtures.js';
import { labelsOf } from '../../harness/manifests.js';

const settings = defaultGuardSettings;
const NAMESPACE = 'dify';
const RELEASE = 'dify';
const SECRET = expandName(contract.names.postgresqlSecret, RELEASE);
const PVC = expandName(contract.names.postgresqlPvc, RELEASE);
const STATES: PvcState[] = ['present', 'absent', 'unknown'];
const secretFixtures = fixtureNames().filter((n) => n.startsWith('secret-'));
/** What every guarded change gets when the release has no PostgreSQL PVC: allowed, nothing to audit. */
const NO_PVC_DECISION: SecretDecision = {
  allowed: true,
  reason: 'NoPvc',
  warnings: [],
  pvc: { namespace: NAMESPACE, name: PVC },
  audit: false,
};
const b64 = (plain: string): string => Buffer.from(plain, 'utf8').toString('base64');

/** A pvcStateOf that answers `state` and records every question. */
function pvcCache(state: PvcState): { pvcStateOf: (ns: string, name: string) => PvcState; calls: [string, string][] } {
  const calls: [string, string][] = [];
  return { calls, pvcStateOf: (ns, name) => (calls.push([ns, name]), state) };
}

function changeOf(fixture: string, edit?: (c: SecretChange) => void): SecretChange {
  const change = secretChangeFromRequest(loadReview(fixture).request);
  edit?.(change);
  return change;
}

function judge(
  change: SecretChange,
  state: PvcState,
  s: GuardSettings = settings,
): { decision: SecretDecision; calls: [string, string][] } {
  const cache = pvcCache(state);
  return { decision: judgeSecretChange(change, s, cache.pvcStateOf), calls: cache.calls };
}

const dataOf = (secret: JsonObject | null): Record<string, string> => (secret?.data ?? {}) as Record<string, string>;
const setPassword = (secret: JsonObject | null, plain: string, keys: readonly string[] = PASSWORD_KEYS): void => {
  for (const key of keys) dataOf(secret)[key] = b64(plain);
};

t.test('the fixtures are AdmissionReview v1 requests for the guarded Secret', async (t) => {
  const update = loadReview('secret-postgresql-update-password');
  t.equal(update.apiVersion, 'admission.k8s.io/v1');
  t.equal(update.request.name, SECRET);
  t.equal(update.request.namespace, NAMESPACE);
  const change = secretChangeFromRequest(update.request);
  t.equal(change.operation, 'UPDATE');
  t.equal(change.dryRun, false);
  t.not(dataOf(change.oldSecret)[SECRET_KEYS.postgresPassword], dataOf(change.newSecret)[SECRET_KEYS.postgresPassword]);
  const del = secretChangeFromRequest(loadReview('secret-postgresql-delete').request);
  t.equal(del.newSecret, null, 'DELETE has no new object');
  t.equal(
    secretChangeFromRequest(loadReview('secret-postgresql-create').request).oldSecret,
    null,
    'CREATE has no old object',
  );
});

t.test(
  'password change under the PVC: UPDATE that changes the password while the PVC exists is denied, with the way out',
  async (t) => {
    const { decision, calls } = judge(changeOf('secret-postgresql-update-password'), 'present');
    t.equal(decision.allowed, false);
    t.equal(decision.reason, 'PasswordChangeUnderPvc');
    t.equal(decision.audit, true);
    t.strictSame(decision.pvc, { namespace: NAMESPACE, name: PVC });
    t.strictSame(calls, [[NAMESPACE, PVC]], 'asked the cache once, about the release PVC in the same namespace');
    const message = decision.message ?? '';
    t.match(message, `Secret ${NAMESPACE}/${SECRET}`, 'names the Secret');
    t.match(message, `PVC ${NAMESPACE}/${PVC}`, 'names the PVC');
    t.match(message, `changes ${SECRET_KEYS.postgresPassword} and ${SECRET_KEYS.password}`, 'says which keys');
    t.match(message, 'initialised', 'says why');
    t.match(message, '28P01', 'says what would break');
    t.match(message, 'original POSTGRES_PASSWORD', 'way out 1: keep the old password');
    t.match(message, `kubectl delete pvc -n ${NAMESPACE} ${PVC}`, 'way out 2: the exact command');
    t.match(message, 'DELETES ALL DIFY DATA', 'and its cost');
    t.strictSame(decision.warnings, []);
  },
);

t.test('password change under the PVC: removing either key counts as a change', async (t) => {
  const cases: [string, readonly string[]][] = [
    ['postgres-password removed', [SECRET_KEYS.postgresPassword]],
    ['password removed', [SECRET_KEYS.password]],
    ['both removed', PASSWORD_KEYS],
  ];
  for (const [name, keys] of cases) {
    const change = changeOf('secret-postgresql-update-unchanged', (c) =>
      keys.forEach((k) => delete dataOf(c.newSecret)[k]),
    );
    const { decision } = judge(change, 'present');
    t.equal(decision.reason, 'PasswordChangeUnderPvc', name);
    t.match(decision.message, `removes ${keys.join(' and ')}`, `${name}: message says what is removed`);
    t.equal(judge(change, 'absent').decision.reason, 'NoPvc', `${name}: allowed without PVC`);
  }
});

t.test(
  'password change under the PVC through stringData (merged by the API server, but also handled when it is not)',
  async (t) => {
    const { decision } = judge(changeOf('secret-postgresql-update-stringdata'), 'present');
    t.equal(decision.reason, 'PasswordChangeUnderPvc');
    const oneKeyLeft = changeOf('secret-postgresql-update-stringdata', (c) => {
      const old = dataOf(c.oldSecret);
      (c.newSecret as JsonObject).stringData = {
        [SECRET_KEYS.postgresPassword]: Buffer.from(old[SECRET_KEYS.postgresPassword] ?? '', 'base64').toString('utf8'),
      };
      delete (c.newSecret as JsonObject).data;
    });
    const removal = judge(oneKeyLeft, 'present').decision;
    t.equal(
      removal.reason,
      'PasswordChangeUnderPvc',
      'stringData keeps the old password on one key, the other is gone',
    );
    t.match(removal.message, `(this request removes ${SECRET_KEYS.password})`);
    const sameBoth = changeOf('secret-postgresql-update-unchanged', (c) => {
      const plain = Buffer.from(dataOf(c.oldSecret)[SECRET_KEYS.postgresPassword] ?? '', 'base64').toString('utf8');
      (c.newSecret as JsonObject).stringData = { [SECRET_KEYS.postgresPassword]: plain, [SECRET_KEYS.password]: plain };
    });
    const unchanged = judge(sameBoth, 'unknown');
    t.equal(unchanged.decision.reason, 'PasswordUnchanged', 'stringData repeating the old password changes nothing');
    t.equal(unchanged.calls.length, 0);
  },
);

t.test('password change: PVC absent -> allowed; PVC state unknown -> refused, fail closed', async (t) => {
  t.strictSame(judge(changeOf('secret-postgresql-update-password'), 'absent').decision, NO_PVC_DECISION);
  const unknown = judge(changeOf('secret-postgresql-update-password'), 'unknown');
  t.equal(unknown.decision.allowed, false);
  t.equal(unknown.decision.reason, 'PvcStateUnknown');
  t.equal(unknown.decision.audit, true);
  t.strictSame(unknown.decision.pvc, { namespace: NAMESPACE, name: PVC });
  t.match(unknown.decision.message, 'cannot verify');
  t.match(unknown.decision.message, 'Retry');
  t.match(unknown.decision.message, PVC);
});

t.test(
  'diverging keys: UPDATE leaving the two keys different is denied, whatever the PVC; under the PVC the refusal names it',
  async (t) => {
    const diverging = [
      changeOf('secret-postgresql-update-unchanged', (c) =>
        setPassword(c.newSecret, 'Only-One-Key-5544', [SECRET_KEYS.password]),
      ),
      changeOf('secret-postgresql-update-unchanged', (c) =>
        setPassword(c.newSecret, 'Only-One-Key-5544', [SECRET_KEYS.postgresPassword]),
      ),
      changeOf('secret-postgresql-update-unchanged', (c) => {
        (c.newSecret as JsonObject).stringData = { [SECRET_KEYS.password]: 'Via-StringData-7788' };
      }),
    ];
    for (const [i, change] of diverging.entries()) {
      for (const state of STATES) {
        const { decision, calls } = judge(change, state);
        t.equal(decision.allowed, false, `case ${i}, PVC ${state}`);
        // With the PVC there, one key changed alone is first of all a password change under it.
        t.equal(
          decision.reason,
          state === 'present' ? 'PasswordChangeUnderPvc' : 'PasswordKeysDiverge',
          `case ${i}, PVC ${state}: reason`,
        );
        t.equal(decision.audit, true);
        t.equal(calls.length, 1, 'one lookup: the PVC decides which refusal');
        t.match(decision.message, `Secret ${NAMESPACE}/${SECRET}`);
        if (state === 'present') t.match(decision.message, `${NAMESPACE}/${PVC}`, 'the refusal names the PVC');
        else t.match(decision.message, `${SECRET_KEYS.postgresPassword} and ${SECRET_KEYS.password}`);
      }
    }
    // Keys that already differed and an edit that leaves them as they are: refused without a lookup.
    const alreadyDiverged = changeOf('secret-postgresql-update-unchanged', (c) => {
      setPassword(c.oldSecret, 'Old-Diverged-1234', [SECRET_KEYS.password]);
      setPassword(c.newSecret, 'Old-Diverged-1234', [SECRET_KEYS.password]);
    });
    for (const state of STATES) {
      const { decision, calls } = judge(alreadyDiverged, state);
      t.equal(decision.reason, 'PasswordKeysDiverge', `already diverged, PVC ${state}`);
      t.equal(calls.length, 0, 'no lookup');
    }
    const onlyOneKey = changeOf(
      'secret-postgresql-update-unchanged',
      (c) => delete dataOf(c.newSecret)[SECRET_KEYS.password],
    );
    t.not(judge(onlyOneKey, 'absent').decision.reason, 'PasswordKeysDiverge', 'one key alone cannot diverge');
  },
);

t.test('password unchanged: UPDATE leaving the password alone is allowed without asking the PVC cache', async (t) => {
  const edits: [string, (c: SecretChange) => void][] = [
    ['chart label bump (the fixture)', () => {}],
    ['annotation added', (c) => (((c.newSecret as JsonObject).metadata as JsonObject).annotations = { note: 'x' })],
    ['other keys changed', (c) => (dataOf(c.newSecret)[SECRET_KEYS.postgresDatabase] = b64('dify2'))],
    [
      'instance label removed (the name still says which release)',
      (c) => delete labelsOf(c.newSecret)[LABELS.instance],
    ],
    [
      'compatibility key added as a copy',
      (c) => {
        delete dataOf(c.oldSecret)[SECRET_KEYS.password];
      },
    ],
    ['dryRun', (c) => (c.dryRun = true)],
  ];
  for (const [name, edit] of edits) {
    for (const state of STATES) {
      const { decision, calls } = judge(changeOf('secret-postgresql-update-unchanged', edit), state);
      t.strictSame(
        decision,
        { allowed: true, reason: 'PasswordUnchanged', warnings: [], audit: false },
        `${name} (PVC ${state})`,
      );
      t.equal(calls.length, 0, `${name}: pvcStateOf not called`);
    }
  }
});

t.test(
  'removing the guard labels while the PVC exists is denied (no switching the guard off in two steps)',
  async (t) => {
    const removals: [string, (c: SecretChange) => void][] = [
      ['name label removed', (c) => delete labelsOf(c.newSecret)[LABELS.name]],
      ['component label changed', (c) => (labelsOf(c.newSecret)[LABELS.component] = 'misc')],
      ['instance label moved to another release', (c) => (labelsOf(c.newSecret)[LABELS.instance] = 'other')],
      ['all labels removed', (c) => delete ((c.newSecret as JsonObject).metadata as JsonObject).labels],
    ];
    for (const [name, edit] of removals) {
      const present = judge(changeOf('secret-postgresql-update-unchanged', edit), 'present');
      t.equal(present.decision.allowed, false, name);
      t.equal(present.decision.reason, 'GuardLabelsRemovedUnderPvc', name);
      t.equal(present.decision.audit, true);
      t.strictSame(present.decision.pvc, { namespace: NAMESPACE, name: PVC });
      t.match(present.decision.message, 'switch the guard off');
      t.equal(
        judge(changeOf('secret-postgresql-update-unchanged', edit), 'absent').decision.reason,
        'NoPvc',
        `${name}: no PVC, allowed`,
      );
      t.equal(
        judge(changeOf('secret-postgresql-update-unchanged', edit), 'unknown').decision.reason,
        'PvcStateUnknown',
        `${name}: fail closed`,
      );
    }
    const both = judge(
      changeOf('secret-postgresql-update-password', (c) => delete labelsOf(c.newSecret)[LABELS.name]),
      'present',
    );
    t.equal(
      both.decision.reason,
      'PasswordChangeUnderPvc',
      'a password change with the labels removed is judged as a password change',
    );
    const relabelAndChange = judge(
      changeOf('secret-postgresql-update-password', (c) => (labelsOf(c.newSecret)[LABELS.instance] = 'x')),
      'present',
    );
    t.equal(relabelAndChange.decision.reason, 'PasswordChangeUnderPvc', 'the release comes from the old object');
    t.strictSame(relabelAndChange.calls, [[NAMESPACE, PVC]]);
  },
);

t.test('DELETE is allowed; under a PVC with a warning and an audit record', async (t) => {
  const present = judge(changeOf('secret-postgresql-delete'), 'present');
  t.equal(present.decision.allowed, true);
  t.equal(present.decision.reason, 'DeleteUnderPvc');
  t.equal(present.decision.audit, true);
  t.strictSame(present.decision.pvc, { namespace: NAMESPACE, name: PVC });
  t.equal(present.decision.warnings.length, 1);
  t.match(present.decision.warnings[0], PVC);
  t.match(present.decision.warnings[0], 'same POSTGRES_PASSWORD');
  t.strictSame(present.calls, [[NAMESPACE, PVC]]);
  t.strictSame(judge(changeOf('secret-postgresql-delete'), 'absent').decision, NO_PVC_DECISION);
  const unknown = judge(changeOf('secret-postgresql-delete'), 'unknown');
  t.equal(unknown.decision.allowed, true, 'never blocks an uninstall');
  t.equal(unknown.decision.reason, 'PvcStateUnknown');
  t.equal(unknown.decision.audit, true, 'audited as if under a PVC');
  t.equal(unknown.decision.warnings.length, 1);
});

t.test('CREATE over an existing PVC is allowed with a warning (and audited)', async (t) => {
  const present = judge(changeOf('secret-postgresql-create'), 'present');
  t.equal(present.decision.allowed, true);
  t.equal(present.decision.reason, 'CreateOverPvc');
  t.equal(present.decision.audit, true);
  t.match(present.decision.warnings[0], 'keeps its old PostgreSQL password');
  t.strictSame(present.calls, [[NAMESPACE, PVC]]);
  t.strictSame(judge(changeOf('secret-postgresql-create'), 'absent').decision, NO_PVC_DECISION);
  const unknown = judge(changeOf('secret-postgresql-create'), 'unknown');
  t.equal(unknown.decision.allowed, true);
  t.equal(unknown.decision.reason, 'PvcStateUnknown');
  t.equal(unknown.decision.warnings.length, 1);
  const diverging = changeOf('secret-postgresql-create', (c) =>
    setPassword(c.newSecret, 'Other-Value-3141', [SECRET_KEYS.password]),
  );
  const denied = judge(diverging, 'absent');
  t.equal(denied.decision.reason, 'PasswordKeysDiverge', 'CREATE with diverging keys is denied');
  t.equal(denied.calls.length, 0);
});

t.test('dryRun gets the same decision for every fixture and PVC state', async (t) => {
  for (const name of secretFixtures) {
    for (const state of STATES) {
      const wet = judge(changeOf(name), state);
      const dry = judge(
        changeOf(name, (c) => (c.dryRun = true)),
        state,
      );
      t.strictSame(dry.decision, wet.decision, `${name}, PVC ${state}`);
      t.strictSame(dry.calls, wet.calls);
    }
  }
});

t.test('only the release PostgreSQL Secret is guarded', async (t) => {
  const redis = judge(changeOf('secret-redis-update'), 'present');
  t.strictSame(redis.decision, { allowed: true, reason: 'NotGuarded', warnings: [], audit: false });
  t.equal(redis.calls.length, 0, 'no lookup');
  const renamed = changeOf('secret-postgresql-update-password', (c) => {
    for (const s of [c.oldSecret, c.newSecret])
      ((s as JsonObject).metadata as JsonObject).name = 'dify-postgresql-backup';
  });
  t.equal(judge(renamed, 'present').decision.reason, 'NotGuarded', 'another name, same labels');
  const otherRelease = changeOf(
    'secret-postgresql-update-password',
    (c) => (labelsOf(c.oldSecret)[LABELS.instance] = 'prod'),
  );
  t.equal(judge(otherRelease, 'present').decision.reason, 'NotGuarded', 'name does not match its release');
  const connect = changeOf('secret-postgresql-update-password', (c) => (c.operation = 'CONNECT'));
  t.equal(judge(connect, 'present').decision.reason, 'NotGuarded');
});

t.test('the release: instance label, else read back from the name; the PVC follows it', async (t) => {
  const prod = changeOf('secret-postgresql-update-password', (c) => {
    for (const s of [c.oldSecret, c.newSecret]) {
      ((s as JsonObject).metadata as JsonObject).name = expandName(contract.names.postgresqlSecret, 'prod');
      delete labelsOf(s)[LABELS.instance];
    }
    c.namespace = 'team-a';
  });
  const { decision, calls } = judge(prod, 'present');
  t.equal(decision.reason, 'PasswordChangeUnderPvc');
  t.strictSame(calls, [['team-a', expandName(contract.names.postgresqlPvc, 'prod')]]);
  t.match(decision.message, `kubectl delete pvc -n team-a ${expandName(contract.names.postgresqlPvc, 'prod')}`);

  const custom: GuardSettings = {
    ...settings,
    postgresqlSecretTemplate: 'pg-{release}',
    postgresqlPvcTemplate: 'pgdata-{release}',
  };
  const customChange = changeOf('secret-postgresql-update-password', (c) => {
    for (const s of [c.oldSecret, c.newSecret]) ((s as JsonObject).metadata as JsonObject).name = `pg-${RELEASE}`;
  });
  const customJudged = judge(customChange, 'present', custom);
  t.equal(customJudged.decision.reason, 'PasswordChangeUnderPvc', 'templates come from the settings');
  t.strictSame(customJudged.calls, [[NAMESPACE, `pgdata-${RELEASE}`]]);
  t.equal(judge(changeOf('secret-postgresql-update-password'), 'present', custom).decision.reason, 'NotGuarded');

  const noNamespace = changeOf('secret-postgresql-delete', (c) => (c.namespace = ''));
  t.strictSame(judge(noNamespace, 'present').calls, [[NAMESPACE, PVC]], 'namespace falls back to the object metadata');
});

t.test(
  'messages and warnings: short warnings, readable denials, never a password, its base64 or its length',
  async (t) => {
    const edits: [string, (c: SecretChange) => void][] = [
      ['as is', () => {}],
      ['keys diverge', (c) => c.newSecret && setPassword(c.newSecret, 'Diverging-Value-2718', [SECRET_KEYS.password])],
      ['labels removed', (c) => c.newSecret && delete labelsOf(c.newSecret)[LABELS.name]],
      [
        'long names',
        (c) => {
          c.namespace = 'n'.repeat(63);
          for (const s of [c.oldSecret, c.newSecret]) {
            if (!s) continue;
            labelsOf(s)[LABELS.instance] = 'r'.repeat(53);
            ((s as JsonObject).metadata as JsonObject).name = expandName(
              contract.names.postgresqlSecret,
              'r'.repeat(53),
            );
          }
        },
      ],
    ];
    /** One scenario's decision: no secret value, warnings within the limit, a denial with a readable message. */
    const scan = (name: string, editName: string, edit: (c: SecretChange) => void, state: PvcState): SecretDecision => {
      const change = changeOf(name, edit);
      const secrets = sensitiveStringsOf({
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: { ...loadReview(name).request, object: change.newSecret, oldObject: change.oldSecret },
      });
      t.ok(secrets.length > 0 || name === 'secret-redis-update', `${name}: the scan has values to look for`);
      const { decision } = judge(change, state);
      const output = JSON.stringify(decision);
      for (const s of secrets)
        t.notOk(output.includes(s), `${name}/${editName}/${state}: no secret value in the decision`);
      for (const w of decision.warnings)
        t.ok(w.length <= MAX_WARNING_LENGTH, `${name}/${editName}/${state}: warning ${w.length} chars`);
      if (!decision.allowed) {
        t.ok(decision.message && decision.message.length > 0, 'a denial always has a message');
        t.equal(decision.audit, true, 'every denial is audited');
        t.notMatch(decision.message, /\b(length|sha|hash)\b/i, 'no hint about the value');
      }
      return decision;
    };
    let denials = 0;
    for (const name of secretFixtures) {
      for (const [editName, edit] of edits) {
        for (const state of STATES) denials += scan(name, editName, edit, state).allowed ? 0 : 1;
      }
    }
    t.ok(denials > 10, `the scan covered denials too (${denials})`);
  },
);
