// Attempts to get around the PostgreSQL Secret guard through a real API server, each checked for
// what the client sees, what is stored afterwards and dify-guard's audit line. What docs/rules.md allows
// (delete then re-create) is asserted as allowed with its warnings, and what the webhook leaves out by
// design (a Secret of the guarded name re-created without the guard labels, or labelled for another
// release) is recorded as it behaves today.
import { Buffer } from 'node:buffer';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { findObject, randomSecret, renderChart, testValues, writeValues } from '../../harness/controlplane/chart.js';
import {
  SECRET_WEBHOOK,
  base64,
  ensureNamespace,
  startStack,
  webhookAnnotations,
} from '../../harness/controlplane/stack.js';
import type { JsonLine } from '../../harness/controlplane/dify-guard.js';
import type { AuditEvent } from '../../harness/controlplane/harness.js';
import { binary } from '../../harness/binaries.js';
import { run, waitFor, type CommandResult } from '../../harness/commands.js';
import { paths, type Json, type KubeResponse, type KubeRest } from '../../harness/kube-rest.js';
import { labelsOf, pvcManifest } from '../../harness/manifests.js';

const stack = await startStack(t, 'bypass');
const { cp, guard, rest } = stack;

interface Release {
  release: string;
  namespace: string;
  secret: string;
  pvc: string;
  /** The password the Secret holds now (kept in memory only; never printed). */
  password: string;
  /** The Secret as the chart renders it for this release. */
  chartSecret: Json;
}

async function installSecret(release: string, namespace: string, withPvc: boolean): Promise<Release> {
  await ensureNamespace(rest, namespace);
  const password = randomSecret();
  const valuesFile = writeValues(
    cp.dir,
    `${release}-${namespace}`,
    testValues({ url: guard.url(''), caBundle: guard.caBundle }, { postgresql: { auth: { password } } }),
  );
  const secret = expandName(contract.names.postgresqlSecret, release);
  const chartSecret = findObject(await renderChart({ release, namespace, valuesFile, home: cp.dir }), 'Secret', secret);
  const pvc = expandName(contract.names.postgresqlPvc, release);
  if (withPvc) {
    const labels = { [LABELS.instance]: release, [LABELS.component]: contract.components.postgresql };
    const res = await rest.create(paths.pvcs(namespace), pvcManifest(pvc, { labels }));
    if (res.status !== 201) throw new Error(`PVC ${namespace}/${pvc}: ${res.status}`);
  }
  const res = await rest.create(paths.secrets(namespace), chartSecret);
  if (res.status !== 201) throw new Error(`Secret ${namespace}/${secret}: ${res.status} ${String(res.body.message)}`);
  return { release, namespace, secret, pvc, password, chartSecret };
}

const dify = await installSecret('dify', 'dify', true);
const teamB = await installSecret('team-b', 'team-b', true);
// The same release name in another namespace, whose own PVC does not exist.
const difyElsewhere = await installSecret('dify', 'dify-elsewhere', false);

const secretPath = (r: Release): string => paths.secret(r.namespace, r.secret);
const stored = (r: Release): Promise<Json> => rest.ok('GET', secretPath(r));
const escapePointer = (key: string): string => key.replaceAll('~', '~0').replaceAll('/', '~1');

/** True when both password keys of the stored Secret decode to `password` (compared here, never shown). */
async function holdsPassword(r: Release, password: string): Promise<boolean> {
  const data = ((await stored(r)).data ?? {}) as Record<string, string>;
  const expected = Buffer.from(password, 'utf8');
  return [SECRET_KEYS.postgresPassword, SECRET_KEYS.password].every(
    (key) => typeof data[key] === 'string' && Buffer.from(data[key], 'base64').equals(expected),
  );
}

function bothKeys(password: string): Json {
  return { [SECRET_KEYS.postgresPassword]: base64(password), [SECRET_KEYS.password]: base64(password) };
}

/** A client with its own user name, so that its audit records can be told apart. */
const as = (user: string): KubeRest => cp.rest({ name: user, groups: ['system:masters'] });

const dryRunChange = async (r: Release): Promise<number> =>
  (await rest.patch(secretPath(r), 'merge', { data: bothKeys(randomSecret()) }, { dryRun: 'All' })).status;

t.before(async () => {
  // dify-guard started before the PVCs existed: wait until its watch has delivered them.
  for (const r of [dify, teamB]) {
    await waitFor(
      `the PVC cache to see ${r.namespace}/${r.pvc}`,
      async () => ((await dryRunChange(r)) === 403 ? true : undefined),
      { timeoutMs: 30_000 },
    );
  }
});

function guardLine(user: string): Promise<JsonLine> {
  return guard.waitForLog(`audit line for ${user}`, (l) => l.audit === true && l.user === user);
}

/** A refusal as the client sees it, with the stored password unchanged and dify-guard's audit line. */
async function assertRefused(
  t: Test,
  res: KubeResponse,
  r: Release,
  user: string,
  reason = 'PasswordChangeUnderPvc',
): Promise<void> {
  t.equal(res.status, 403, 'refused with 403');
  t.equal(res.body.reason, 'Forbidden', 'reason Forbidden');
  const message = String(res.body.message);
  t.ok(
    message.includes(`admission webhook "${SECRET_WEBHOOK}" denied the request`),
    'the client sees which webhook refused',
  );
  t.ok(message.includes(`${r.namespace}/${r.secret}`), 'the message names the Secret');
  if (reason !== 'PasswordKeysDiverge') t.ok(message.includes(`${r.namespace}/${r.pvc}`), 'the message names the PVC');
  if (reason === 'PasswordChangeUnderPvc')
    t.ok(message.includes(`kubectl delete pvc -n ${r.namespace} ${r.pvc}`), 'the message gives the way out');
  t.equal(await holdsPassword(r, r.password), true, 'the stored password is unchanged');
  const line = await guardLine(user);
  t.match(
    line,
    { decision: 'denied', reason, operation: 'UPDATE', namespace: r.namespace, name: r.secret, dryRun: false },
    'dify-guard wrote the audit line of the refusal',
  );
  if (reason !== 'PasswordKeysDiverge') t.equal(line.pvc, `${r.namespace}/${r.pvc}`, 'the audit line names the PVC');
}

/** `user` patches a new password into both keys of r's Secret: refused, as assertRefused checks. */
async function assertPasswordChangeRefused(t: Test, r: Release, user: string): Promise<void> {
  await assertRefused(t, await as(user).patch(secretPath(r), 'merge', { data: bothKeys(randomSecret()) }), r, user);
}

/** `user` patches a new password into both keys of r's Secret: allowed (`why`), stored, and r.password follows. */
async function assertPasswordChanged(t: Test, r: Release, user: string, why: string): Promise<void> {
  const password = randomSecret();
  const res = await as(user).patch(secretPath(r), 'merge', { data: bothKeys(password) });
  t.equal(res.status, 200, why);
  t.equal(await holdsPassword(r, password), true, 'the new password is stored');
  r.password = password;
}

/** An allowed request under the PVC: dify-guard's audit line and the API server's audit event both record it. */
async function assertAllowedAudited(
  t: Test,
  res: KubeResponse,
  r: Release,
  user: string,
  expected: { reason: string; operation: string },
): Promise<void> {
  const pvc = `${r.namespace}/${r.pvc}`;
  t.match(await guardLine(user), { decision: 'allowed', ...expected, pvc });
  t.same(
    webhookAnnotations(await cp.auditEventOf(res.auditId), SECRET_WEBHOOK),
    { decision: 'allowed', reason: expected.reason, pvc },
    'the API server audit log records it',
  );
}

/** The stored Secret with some labels removed and both password keys set to `password`. */
async function withoutLabels(r: Release, remove: string[], password: string): Promise<Json> {
  const current = await stored(r);
  const labels = Object.fromEntries(Object.entries(labelsOf(current)).filter(([k]) => !remove.includes(k)));
  return {
    ...current,
    metadata: { ...(current.metadata as Json), labels },
    data: { ...(current.data as Json), ...bothKeys(password) },
  };
}

t.test('removing both guard labels and changing the password in one PUT is refused', async (t) => {
  const user = 'labels-put';
  const res = await as(user).replace(
    secretPath(dify),
    await withoutLabels(dify, [LABELS.name, LABELS.component], randomSecret()),
  );
  await assertRefused(t, res, dify, user);
  t.match(
    labelsOf(await stored(dify)),
    { [LABELS.name]: contract.values.difyName, [LABELS.component]: contract.components.postgresql },
    'the labels are still there',
  );
});

t.test('removing both guard labels and changing the password in one merge patch is refused', async (t) => {
  const user = 'labels-merge';
  const res = await as(user).patch(secretPath(dify), 'merge', {
    metadata: { labels: { [LABELS.name]: null, [LABELS.component]: null } },
    data: bothKeys(randomSecret()),
  });
  await assertRefused(t, res, dify, user);
});

t.test(`removing only ${LABELS.name} with a password change (PUT) is refused`, async (t) => {
  const user = 'name-label-put';
  const res = await as(user).replace(secretPath(dify), await withoutLabels(dify, [LABELS.name], randomSecret()));
  await assertRefused(t, res, dify, user);
});

t.test(`removing only ${LABELS.component} with a password change (merge patch) is refused`, async (t) => {
  const user = 'component-label-merge';
  const res = await as(user).patch(secretPath(dify), 'merge', {
    metadata: { labels: { [LABELS.component]: null } },
    data: bothKeys(randomSecret()),
  });
  await assertRefused(t, res, dify, user);
});

t.test(`changing ${LABELS.instance} to another release name with a password change is refused`, async (t) => {
  const user = 'instance-and-password';
  const next = base64(randomSecret());
  const res = await as(user).patch(secretPath(dify), 'json', [
    { op: 'replace', path: `/metadata/labels/${escapePointer(LABELS.instance)}`, value: teamB.release },
    { op: 'replace', path: `/data/${SECRET_KEYS.postgresPassword}`, value: next },
    { op: 'replace', path: `/data/${SECRET_KEYS.password}`, value: next },
  ]);
  await assertRefused(t, res, dify, user);
  t.equal(labelsOf(await stored(dify))[LABELS.instance], dify.release, 'the instance label is unchanged');
});

t.test(`changing ${LABELS.instance} alone (the first of two steps) is refused too`, async (t) => {
  const user = 'instance-alone';
  const res = await as(user).patch(secretPath(dify), 'merge', {
    metadata: { labels: { [LABELS.instance]: teamB.release } },
  });
  await assertRefused(t, res, dify, user, 'GuardLabelsRemovedUnderPvc');
});

t.test(
  `removing ${LABELS.instance} (allowed: the release is then read from the Secret's name) does not open a second step`,
  async (t) => {
    const removed = await as('instance-remover').patch(secretPath(dify), 'merge', {
      metadata: { labels: { [LABELS.instance]: null } },
    });
    t.equal(removed.status, 200, 'the first step is allowed');
    t.equal(labelsOf(await stored(dify))[LABELS.instance], undefined, 'the instance label is gone');
    await assertPasswordChangeRefused(t, dify, 'after-instance-removal');
    const restored = await as('instance-restorer').patch(secretPath(dify), 'merge', {
      metadata: { labels: { [LABELS.instance]: dify.release } },
    });
    t.equal(restored.status, 200, 'the label can be put back');
  },
);

t.test('emptying the password (PUT with empty values) is refused', async (t) => {
  const user = 'password-emptied';
  const current = await stored(dify);
  const data = { ...(current.data as Json), [SECRET_KEYS.postgresPassword]: '', [SECRET_KEYS.password]: '' };
  await assertRefused(t, await as(user).replace(secretPath(dify), { ...current, data }), dify, user);
});

t.test('null password values in a PUT (stored as removed keys) are refused', async (t) => {
  const user = 'password-nulled';
  const current = await stored(dify);
  const data = { ...(current.data as Json), [SECRET_KEYS.postgresPassword]: null, [SECRET_KEYS.password]: null };
  await assertRefused(t, await as(user).replace(secretPath(dify), { ...current, data }), dify, user);
});

t.test(`changing ${SECRET_KEYS.password} alone is refused as a password change under the PVC`, async (t) => {
  const user = 'password-key-alone';
  const res = await as(user).patch(secretPath(dify), 'json', [
    { op: 'replace', path: `/data/${SECRET_KEYS.password}`, value: base64(randomSecret()) },
  ]);
  await assertRefused(t, res, dify, user);
});

t.test(`changing ${SECRET_KEYS.postgresPassword} alone is refused as a password change under the PVC`, async (t) => {
  const user = 'postgres-password-key-alone';
  const res = await as(user).patch(secretPath(dify), 'merge', {
    data: { [SECRET_KEYS.postgresPassword]: base64(randomSecret()) },
  });
  await assertRefused(t, res, dify, user);
});

t.test(
  `removing ${SECRET_KEYS.postgresPassword} while changing ${SECRET_KEYS.password} (no divergence left) is refused`,
  async (t) => {
    const user = 'remove-one-change-other';
    const res = await as(user).patch(secretPath(dify), 'json', [
      { op: 'remove', path: `/data/${SECRET_KEYS.postgresPassword}` },
      { op: 'replace', path: `/data/${SECRET_KEYS.password}`, value: base64(randomSecret()) },
    ]);
    await assertRefused(t, res, dify, user);
  },
);

t.test('another release (team-b in team-b) is guarded the same way', async (t) => {
  await assertPasswordChangeRefused(t, teamB, 'team-b-operator');
});

t.test(
  "the same release name in a namespace without its PVC may change its password (the PVC is looked up in the Secret's namespace)",
  async (t) => {
    await assertPasswordChanged(t, difyElsewhere, 'elsewhere-operator', 'allowed');
    t.equal(await dryRunChange(dify), 403, 'while the same change in dify is still refused');
  },
);

t.test(
  "relabelling the namespace as kube-system does not take it out of the webhook's namespaceSelector",
  async (t) => {
    // The chart excludes kube-system by kubernetes.io/metadata.name, which the API server keeps equal to the name.
    const nameLabel = 'kubernetes.io/metadata.name';
    await rest.patch(paths.namespace(dify.namespace), 'merge', {
      metadata: { labels: { [nameLabel]: 'kube-system' } },
    });
    const ns = await rest.ok('GET', paths.namespace(dify.namespace));
    t.equal(labelsOf(ns)[nameLabel], dify.namespace, 'the API server kept the namespace name label');
    await assertPasswordChangeRefused(t, dify, 'namespace-relabeller');
  },
);

/** A file only this test reads (mode 0600), so no credential appears on a command line. */
function privateFile(name: string, content: string): string {
  const file = join(cp.dir, name);
  writeFileSync(file, content, { mode: 0o600 });
  return file;
}

/** kubectl as the harness admin, impersonating `user` (admin is in system:masters, which may impersonate). */
const kubectlAs = (user: string, args: string[], input?: string): Promise<CommandResult> =>
  run(binary('kubectl'), [...args, `--as=${user}`, '--as-group=system:masters'], {
    env: cp.env(),
    ...(input === undefined ? {} : { input }),
  });

const showsPassword = (text: string, password: string): boolean =>
  text.includes(password) || text.includes(base64(password));

/** kubectl's stderr is never shown, only checked. */
function assertKubectlRefused(t: Test, result: CommandResult, r: Release, password: string): void {
  t.not(result.status, 0, 'kubectl fails');
  t.equal(showsPassword(result.stderr, password), false, 'kubectl printed no password');
  t.equal(result.stderr.includes('Forbidden'), true, 'kubectl reports Forbidden');
  t.equal(
    result.stderr.includes(`admission webhook "${SECRET_WEBHOOK}" denied the request`),
    true,
    "kubectl shows the webhook's refusal",
  );
  t.equal(result.stderr.includes(`${r.namespace}/${r.pvc}`), true, 'kubectl shows the PVC that blocks it');
}

function secretManifest(r: Release, password: string): Json {
  const metadata = r.chartSecret.metadata as Json;
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: { name: r.secret, namespace: r.namespace, labels: metadata.labels, annotations: metadata.annotations },
    data: { ...(r.chartSecret.data as Json), ...bothKeys(password) },
  };
}

t.test(
  'client-side `kubectl apply` (strategic merge patch against last-applied) of a new password is refused',
  async (t) => {
    const first = await kubectlAs('applier-adopt', [
      'apply',
      '-f',
      privateFile('apply-same.json', JSON.stringify(secretManifest(dify, dify.password))),
    ]);
    t.equal(first.status, 0, 'the real kubectl applies the unchanged password (allowed; it records last-applied)');
    t.equal(showsPassword(first.stderr, dify.password), false, 'kubectl printed no password');
    const annotations = ((await stored(dify)).metadata as Json).annotations as Record<string, string>;
    const lastApplied = Object.keys(annotations).find((k) => k.endsWith('/last-applied-configuration'));
    t.ok(lastApplied, 'the Secret now carries the last-applied annotation');

    // The changed apply is sent as the exact patch kubectl computes, not through kubectl: a refused
    // `kubectl apply` prints its whole patch, the new password's base64 included, on stderr.
    const user = 'kubectl-applier';
    const password = randomSecret();
    const manifest = secretManifest(dify, password);
    const res = await as(user).patch(
      secretPath(dify),
      'strategic',
      {
        data: bothKeys(password),
        metadata: { annotations: { [lastApplied ?? '']: `${JSON.stringify(manifest)}\n` } },
      },
      { fieldManager: 'kubectl-client-side-apply' },
    );
    await assertRefused(t, res, dify, user);
  },
);

/** `kubectl create secret generic <name> --from-file=... --dry-run=client -o yaml`: a Secret without any label. */
async function createdSecretYaml(r: Release, password: string): Promise<string> {
  const file = privateFile(`new-password-${r.release}`, password);
  const res = await run(
    binary('kubectl'),
    [
      'create',
      'secret',
      'generic',
      r.secret,
      '-n',
      r.namespace,
      `--from-file=${SECRET_KEYS.postgresPassword}=${file}`,
      `--from-file=${SECRET_KEYS.password}=${file}`,
      '--dry-run=client',
      '-o',
      'yaml',
    ],
    { env: cp.env() },
  );
  if (res.status !== 0) throw new Error('kubectl create secret --dry-run=client failed');
  return res.stdout;
}

t.test('`kubectl create secret ... --dry-run=client -o yaml | kubectl replace -f -` is refused', async (t) => {
  const user = 'kubectl-replacer';
  const password = randomSecret();
  const result = await kubectlAs(user, ['replace', '-f', '-'], await createdSecretYaml(dify, password));
  assertKubectlRefused(t, result, dify, password);
  t.equal(await holdsPassword(dify, dify.password), true, 'the stored password is unchanged');
  t.match(
    labelsOf(await stored(dify)),
    { [LABELS.name]: contract.values.difyName, [LABELS.component]: contract.components.postgresql },
    'the labels are unchanged',
  );
  t.match(
    await guardLine(user),
    { decision: 'denied', reason: 'PasswordChangeUnderPvc', operation: 'UPDATE', name: dify.secret },
    'dify-guard wrote the audit line',
  );
});

const keepsOldPassword = (warnings: string[], r: Release): boolean =>
  warnings.some(
    (w) => w.startsWith('dify-guard:') && w.includes(r.pvc) && /keeps its (old )?PostgreSQL password/.test(w),
  );

t.test(
  'delete then re-create with another password: the documented route, allowed with warnings and audit records',
  async (t) => {
    const deleter = 'route-deleter';
    const deleted = await as(deleter).delete(secretPath(dify));
    t.equal(deleted.status, 200, 'DELETE allowed (helm uninstall must work)');
    t.equal(keepsOldPassword(deleted.warnings, dify), true, 'the DELETE warning says the PVC keeps its password');
    await assertAllowedAudited(t, deleted, dify, deleter, { reason: 'DeleteUnderPvc', operation: 'DELETE' });

    const creator = 'route-creator';
    const password = randomSecret();
    const created = await as(creator).create(paths.secrets(dify.namespace), {
      ...dify.chartSecret,
      data: { ...(dify.chartSecret.data as Json), ...bothKeys(password) },
    });
    t.equal(created.status, 201, 'CREATE allowed');
    t.equal(keepsOldPassword(created.warnings, dify), true, 'the CREATE warning says the PVC keeps its old password');
    await assertAllowedAudited(t, created, dify, creator, { reason: 'CreateOverPvc', operation: 'CREATE' });
    t.equal(await holdsPassword(dify, password), true, 'the re-created Secret holds the new password');
    dify.password = password;

    await assertPasswordChangeRefused(t, dify, 'after-recreate');
  },
);

/** Waits until dify-guard has logged a new dry-run refusal, so that every line of earlier requests is in the log. */
async function flushGuardLog(marker: string): Promise<void> {
  await as(marker).patch(secretPath(teamB), 'merge', { data: bothKeys(randomSecret()) }, { dryRun: 'All' });
  await guardLine(marker);
}

t.test(
  'a Secret of the guarded name without the guard labels is not selected by the webhook (recorded behaviour)',
  async (t) => {
    // `kubectl replace --force` deletes the labelled Secret (allowed, warned) and creates the unlabelled one.
    const replacer = 'force-replacer';
    const password = randomSecret();
    const result = await kubectlAs(
      replacer,
      ['replace', '--force', '-f', '-'],
      await createdSecretYaml(dify, password),
    );
    t.equal(result.status, 0, 'kubectl replace --force succeeds');
    t.equal(showsPassword(result.stderr, password), false, 'kubectl printed no password');
    t.equal(
      keepsOldPassword(
        result.stderr.split('\n').map((l) => l.replace(/^Warning: /, '')),
        dify,
      ),
      true,
      'kubectl shows the DELETE warning that the PVC keeps its password',
    );
    const current = await stored(dify);
    t.equal(labelsOf(current)[LABELS.component], undefined, 'the stored Secret carries no guard label');
    t.equal(await holdsPassword(dify, password), true, 'it holds the new password');
    dify.password = password;
    await flushGuardLog('marker-1');
    const lines = guard.logLines().filter((l) => l.audit === true && l.user === replacer);
    t.same(
      lines.map((l) => l.operation),
      ['DELETE'],
      'dify-guard saw only the DELETE: the unlabelled CREATE never reached it',
    );
    // kubectl impersonated the user: the audit event's user is the admin, the impersonated one is recorded beside it.
    const createEvent = cp
      .auditEvents()
      .find(
        (e) =>
          (e as AuditEvent & { impersonatedUser?: { username: string } }).impersonatedUser?.username === replacer &&
          e.verb === 'create' &&
          e.objectRef?.name === dify.secret &&
          e.stage === 'ResponseComplete',
      );
    t.equal(createEvent?.responseStatus?.code, 201, 'the API server audit log has the CREATE');
    t.same(
      createEvent ? webhookAnnotations(createEvent, SECRET_WEBHOOK) : undefined,
      {},
      'with no decision of the Secret webhook',
    );

    await assertPasswordChanged(
      t,
      dify,
      'unlabelled-changer',
      'while unlabelled, its password changes under the PVC without the webhook being asked',
    );

    const relabeller = 'relabel-and-change';
    const guardLabels = labelsOf(dify.chartSecret);
    const relabelled = await as(relabeller).patch(secretPath(dify), 'merge', {
      metadata: { labels: guardLabels },
      data: bothKeys(randomSecret()),
    });
    await assertRefused(t, relabelled, dify, relabeller);

    const restored = await as('relabeller').patch(secretPath(dify), 'merge', { metadata: { labels: guardLabels } });
    t.equal(restored.status, 200, 'putting the labels back without a password change is allowed');
    await assertPasswordChangeRefused(t, dify, 'after-relabel');
  },
);

t.test(
  'a labelled Secret of the guarded name whose instance label names another release is not guarded (recorded behaviour)',
  async (t) => {
    // Reachable only through a DELETE (audited, warned): changing the instance label in place is refused above.
    const deleted = await as('mislabel-deleter').delete(secretPath(dify));
    t.equal(deleted.status, 200, 'DELETE allowed with its warning');
    const creator = 'mislabel-creator';
    const password = randomSecret();
    const labels = { ...labelsOf(dify.chartSecret), [LABELS.instance]: teamB.release };
    const created = await as(creator).create(paths.secrets(dify.namespace), {
      ...dify.chartSecret,
      metadata: { ...(dify.chartSecret.metadata as Json), labels },
      data: { ...(dify.chartSecret.data as Json), ...bothKeys(password) },
    });
    t.equal(created.status, 201, 'CREATE allowed');
    t.same(
      created.warnings,
      [],
      'without the "PVC keeps its old password" warning: judged as another release\'s Secret, not guarded',
    );
    dify.password = password;
    const changer = 'mislabel-changer';
    await assertPasswordChanged(t, dify, changer, 'its password then changes under the PVC');
    await flushGuardLog('marker-2');
    t.same(
      guard.logLines().filter((l) => l.audit === true && (l.user === creator || l.user === changer)),
      [],
      'dify-guard recorded neither',
    );

    // Back to the chart's labels (allowed: the old object is not this release's guarded Secret), guarded again.
    const restored = await as('mislabel-restorer').patch(secretPath(dify), 'merge', {
      metadata: { labels: labelsOf(dify.chartSecret) },
    });
    t.equal(restored.status, 200, "the chart's instance label can be put back");
    await assertPasswordChangeRefused(t, dify, 'after-mislabel');
  },
);

t.test('a PVC being deleted (Terminating, held by its finalizer) still blocks a password change', async (t) => {
  const deleting = await rest.delete(paths.pvc(teamB.namespace, teamB.pvc));
  t.equal(deleting.status, 200, 'the PVC deletion is accepted');
  const pvc = await rest.ok('GET', paths.pvc(teamB.namespace, teamB.pvc));
  t.ok(
    (pvc.metadata as Json).deletionTimestamp,
    'the PVC is Terminating (pvc-protection keeps it while no controller runs)',
  );
  // The cluster-wide watch delivers in order: once a later PVC is seen, the Terminating update was seen before it.
  const later = await rest.create(paths.pvcs(difyElsewhere.namespace), pvcManifest(difyElsewhere.pvc));
  t.equal(later.status, 201);
  await waitFor(
    'dify-guard to see the later PVC',
    async () => ((await dryRunChange(difyElsewhere)) === 403 ? true : undefined),
    { timeoutMs: 30_000 },
  );
  await assertPasswordChangeRefused(t, teamB, 'terminating-pvc');

  await rest.patch(paths.pvc(teamB.namespace, teamB.pvc), 'merge', { metadata: { finalizers: null } });
  await waitFor(
    'dify-guard to see the PVC gone',
    async () => ((await dryRunChange(teamB)) === 200 ? true : undefined),
    { timeoutMs: 30_000 },
  );
  t.pass('once the PVC is really gone the change is allowed');
});
