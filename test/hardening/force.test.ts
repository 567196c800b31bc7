// The `--force` flags of kubectl against the PostgreSQL Secret guard, with the real kubectl through a
// real API server. `kubectl apply --force` re-creates an object only when its patch fails with a
// Conflict or Invalid (422); dify-guard refuses with 403 Forbidden, so nothing is re-created.
// `kubectl replace --force` deletes and re-creates from the start: docs/rules.md allows both steps
// (so that `helm uninstall` and a reinstall over kept data work), each with a warning and an audit
// record. That is a documented route around the guard (SECURITY.md), asserted here as such.
import { Buffer } from 'node:buffer';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { findObject, randomSecret, renderChart, testValues, writeValues } from '../../harness/controlplane/chart.js';
import { SECRET_WEBHOOK, auditLines, ensureNamespace, startStack } from '../../harness/controlplane/stack.js';
import { binary } from '../../harness/binaries.js';
import { run, waitFor, type RunOptions } from '../../harness/commands.js';
import { paths, type Json } from '../../harness/kube-rest.js';
import { pvcManifest } from '../../harness/manifests.js';

const release = 'dify';
const namespace = 'dify';
const secretName = expandName(contract.names.postgresqlSecret, release);
const pvcName = expandName(contract.names.postgresqlPvc, release);
const secretPath = paths.secret(namespace, secretName);

const { cp, guard, rest } = await startStack(t, 'force');
await ensureNamespace(rest, namespace);

const original = randomSecret();
const valuesFile = writeValues(
  cp.dir,
  'force',
  testValues({ url: guard.url(''), caBundle: guard.caBundle }, { postgresql: { auth: { password: original } } }),
);
const chartSecret = findObject(
  await renderChart({ release, namespace, valuesFile, home: cp.dir }),
  'Secret',
  secretName,
);

/** The chart's Secret with another password in both keys, as a manifest file an operator would pass to kubectl. */
function manifestWith(password: string, name: string): string {
  const manifest = structuredClone(chartSecret);
  const data = manifest.data as Record<string, string>;
  data[SECRET_KEYS.postgresPassword] = Buffer.from(password, 'utf8').toString('base64');
  data[SECRET_KEYS.password] = Buffer.from(password, 'utf8').toString('base64');
  const file = join(cp.dir, name);
  writeFileSync(file, JSON.stringify(manifest), { mode: 0o600 });
  return file;
}

/** True when both password keys of the stored Secret decode to `password` (compared, never shown). */
async function holds(password: string): Promise<boolean> {
  const data = ((await rest.ok('GET', secretPath)).data ?? {}) as Record<string, string>;
  return [SECRET_KEYS.postgresPassword, SECRET_KEYS.password].every((k) =>
    Buffer.from(data[k] ?? '', 'base64').equals(Buffer.from(password, 'utf8')),
  );
}

const uidOf = async (): Promise<string> => String(((await rest.ok('GET', secretPath)).metadata as Json).uid);

const kubectl = (user: string, args: string[], options: RunOptions = {}) =>
  run(binary('kubectl'), [...args, '-n', namespace, `--as=${user}`, '--as-group=system:masters'], {
    env: cp.env(),
    ...options,
  });

t.before(async () => {
  const labels = { [LABELS.instance]: release, [LABELS.component]: contract.components.postgresql };
  const pvc = await rest.create(paths.pvcs(namespace), pvcManifest(pvcName, { labels }));
  if (pvc.status !== 201) throw new Error(`PVC: ${pvc.status}`);
  const secret = await rest.create(paths.secrets(namespace), chartSecret);
  if (secret.status !== 201) throw new Error(`Secret: ${secret.status} ${String(secret.body.message)}`);
  await waitFor(
    'the PVC cache to see the PVC',
    async () => {
      const res = await rest.patch(
        secretPath,
        'merge',
        { stringData: { [SECRET_KEYS.postgresPassword]: randomSecret(), [SECRET_KEYS.password]: randomSecret() } },
        { dryRun: 'All' },
      );
      return res.status === 403 ? true : undefined;
    },
    { timeoutMs: 30_000 },
  );
});

t.test('kubectl apply --force with another password is refused and re-creates nothing', async (t) => {
  const adopt = await kubectl('force-adopt', ['apply', '-f', manifestWith(original, 'same.json')]);
  t.equal(adopt.status, 0, 'the same password applies (kubectl records last-applied)');
  const uid = await uidOf();
  // A refused `kubectl apply` prints the patch it sent, Secret data included, on stderr: kubectl's
  // echo of the caller's own input (SECURITY.md), so this output stays out of the password scan.
  const res = await kubectl('force-applier', ['apply', '--force', '-f', manifestWith(randomSecret(), 'other.json')], {
    skipStderrCapture: true,
  });
  t.not(res.status, 0, 'kubectl apply --force fails');
  t.ok(res.stderr.includes(`admission webhook "${SECRET_WEBHOOK}" denied the request`), "with dify-guard's refusal");
  t.ok(res.stderr.includes(`${namespace}/${pvcName}`), 'naming the PVC');
  t.equal(await uidOf(), uid, 'the Secret was not deleted and re-created');
  t.equal(await holds(original), true, 'the password is unchanged');
  const line = await guard.waitForLog(
    'the audit line of the refusal',
    (l) => l.audit === true && l.user === 'force-applier',
  );
  t.equal(line.reason, 'PasswordChangeUnderPvc');
});

t.test(
  'kubectl replace --force deletes and re-creates: allowed by design, with a warning and an audit record on each step',
  async (t) => {
    const uid = await uidOf();
    const next = randomSecret();
    const res = await kubectl('force-replacer', ['replace', '--force', '-f', manifestWith(next, 'replace.json')]);
    t.equal(res.status, 0, 'kubectl replace --force succeeds');
    t.match(res.stderr, /Warning: .*PVC/, "kubectl shows dify-guard's warnings about the PVC");
    t.notOk(
      res.stderr.includes(next) || res.stderr.includes(Buffer.from(next).toString('base64')),
      'kubectl printed no password',
    );
    t.not(await uidOf(), uid, 'the Secret is a new object');
    t.equal(
      await holds(next),
      true,
      'it holds the new password (the PVC keeps the old one: the route SECURITY.md names)',
    );
    await waitFor('both audit lines', () => {
      const reasons = auditLines(guard)
        .filter((l) => l.user === 'force-replacer')
        .map((l) => l.reason);
      return reasons.includes('DeleteUnderPvc') && reasons.includes('CreateOverPvc') ? true : undefined;
    });
    const reasons = auditLines(guard)
      .filter((l) => l.user === 'force-replacer')
      .map((l) => String(l.reason))
      .sort();
    t.same(reasons, ['CreateOverPvc', 'DeleteUnderPvc'], 'a DELETE and a CREATE, each audited');
  },
);
