// The chart installed for real (helm install/upgrade/uninstall against a real kube-apiserver + etcd,
// no kubelet: no pod ever runs, so hooks are skipped): what only a cluster can show. The
// Helm-generated dify-guard CA and the generated shared keys survive `helm upgrade` (lookup),
// the guide's `helm upgrade --reuse-values` works, and `helm uninstall` leaves no webhook behind.
import { dirname, join } from 'node:path';
import t from 'tap';
import { contract } from '../../src/contract.js';
import { startControlPlane } from '../../harness/controlplane/harness.js';
import { binary } from '../../harness/binaries.js';
import { run, type CommandResult, type RunOptions } from '../../harness/commands.js';
import { chartDir, requiredValues, testSecret, valuesFile, type Json } from '../../harness/helm.js';
import { pvcManifest } from '../../harness/manifests.js';
import { namespace, readBackScript, release, releaseName } from './support.js';

const cp = await startControlPlane(t, { name: 'chart-install' });

const get = async (path: string): Promise<Json> => {
  const r = await cp.kubectl(['get', '--raw', path]);
  if (r.status !== 0) throw new Error(`GET ${path}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Json;
};
const exists = async (args: string[]): Promise<boolean> => {
  const r = await cp.kubectl(['get', ...args, '--ignore-not-found', '-o', 'name']);
  if (r.status !== 0) throw new Error(`kubectl get ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim() !== '';
};
const webhookConfigs = async (): Promise<Json[]> => {
  const items: Json[] = [];
  for (const kind of ['mutatingwebhookconfigurations', 'validatingwebhookconfigurations']) {
    items.push(...((await get(`/apis/admissionregistration.k8s.io/v1/${kind}`)).items as Json[]));
  }
  return items;
};
const caBundles = async (): Promise<string[]> =>
  (await webhookConfigs()).flatMap((c) => (c.webhooks as Json[]).map((w) => String((w.clientConfig as Json).caBundle)));
const secretData = async (name: string): Promise<Record<string, string>> =>
  (await get(`/api/v1/namespaces/${namespace}/secrets/${name}`)).data as Record<string, string>;

const required = requiredValues();
const values = valuesFile(required);
const tlsSecretOf = async (): Promise<string> => {
  const guardPods = encodeURIComponent(`${contract.labels.name}=${contract.values.guardName}`);
  const deploy = await get(`/apis/apps/v1/namespaces/${namespace}/deployments?labelSelector=${guardPods}`);
  const volumes = ((((deploy.items as Json[])[0]!.spec as Json).template as Json).spec as Json).volumes as Json[];
  return String((volumes.find((v) => v.name === 'tls')!.secret as Json).secretName);
};

// Every helm call of this file names the release, the chart and the namespace, and skips the hooks (no pod ever runs here).
const target = [release, chartDir, '--namespace', namespace, '--no-hooks'];
/** A helm call that must succeed (cp.helm throws otherwise). */
const helmOk = (verb: 'install' | 'upgrade', ...extra: string[]): Promise<CommandResult> =>
  cp.helm([verb, ...target, ...extra]);
/** A helm upgrade that may be refused: its result, whatever its status. */
const tryUpgrade = (extra: string[], options: RunOptions = {}): Promise<CommandResult> =>
  run(binary('helm'), ['upgrade', ...target, ...extra], { env: cp.env(), ...options });

await helmOk('install', '--create-namespace', '-f', values);
const tlsSecret = await tlsSecretOf();
const first = {
  tls: await secretData(tlsSecret),
  ca: await caBundles(),
  app: await secretData(releaseName('appSecrets')),
};

t.test('install: the webhook configurations trust the CA of the generated Secret', async (t) => {
  t.equal(first.ca.length, 3, 'pods, secrets and workloads webhooks');
  t.ok(first.ca.every((ca) => ca === first.tls['ca.crt']));
});

t.test(
  "upgrade (same values, then the guide's --reuse-values) keeps the CA, the certificate and the shared keys",
  async (t) => {
    await helmOk('upgrade', '-f', values);
    await helmOk('upgrade', '--reuse-values');
    t.same(await secretData(tlsSecret), first.tls, 'TLS Secret unchanged');
    t.same(await caBundles(), first.ca, 'caBundle unchanged');
    t.same(await secretData(releaseName('appSecrets')), first.app, 'generated sandbox/plugin keys kept');
  },
);

t.test('rotation: deleting the TLS Secret and upgrading issues a new CA, and both webhooks follow it', async (t) => {
  const r = await cp.kubectl(['delete', 'secret', '-n', namespace, tlsSecret]);
  t.equal(r.status, 0, r.stderr);
  await helmOk('upgrade', '--reuse-values');
  const tls = await secretData(tlsSecret);
  t.not(tls['ca.crt'], first.tls['ca.crt'], 'a new CA');
  t.ok(
    (await caBundles()).every((ca) => ca === tls['ca.crt']),
    'caBundle updated in both configurations',
  );
});

const pvcName = releaseName('postgresqlPvc');
// Another PostgreSQL password (and another SECRET_KEY, which the check ignores).
const otherPassword = valuesFile(requiredValues());

const refusal = (pgSecret: string): string =>
  `postgresql.auth.password differs from the password in Secret ${namespace}/${pgSecret} while PVC ${namespace}/${pvcName} exists`;

t.test(
  'PVC present, dify-guard registered: the chart refuses another password itself, --dry-run=server included',
  async (t) => {
    // The PVC the StatefulSet controller would create from its volumeClaimTemplate.
    const pvc = pvcManifest(pvcName, { namespace });
    const created = await cp.kubectl(['create', '-f', '-'], { input: JSON.stringify(pvc) });
    t.equal(created.status, 0, created.stderr);
    const pgSecret = releaseName('postgresqlSecret');
    const before = await secretData(pgSecret);
    t.equal((await webhookConfigs()).length, 2, "dify-guard's webhooks are registered");
    // A server dry-run sends nothing to the API server (no admission): only the chart's render-time check can refuse it.
    const dryRun = await tryUpgrade(['--dry-run=server', '-f', otherPassword]);
    t.not(dryRun.status, 0, 'helm upgrade --dry-run=server does not report success');
    t.match(dryRun.stderr, refusal(pgSecret));
    t.match(dryRun.stderr, `kubectl delete pvc -n ${namespace} ${pvcName}`, 'with the way out');
    const refused = await tryUpgrade(['-f', otherPassword]);
    t.not(refused.status, 0, 'helm upgrade fails');
    t.match(refused.stderr, refusal(pgSecret), 'refused at render time, before any write reaches the API server');
    t.same(await secretData(pgSecret), before, 'nothing changed');
    // A rotation done in the database first: the chart hands the decision to dify-guard's webhook (no process serves it
    // in this file, so the fail-closed webhook refuses the write; test/controlplane/verified-rotation.test.ts asks a real one).
    const handedOver = await tryUpgrade(['-f', otherPassword, '--set', 'postgresql.auth.rotatedInDatabase=true']);
    t.not(handedOver.status, 0, 'the change is still not stored');
    t.notMatch(handedOver.stderr, refusal(pgSecret), 'rotatedInDatabase: no render-time refusal');
    t.match(handedOver.stderr, contract.webhook.secretWebhookName, "the Secret write reached dify-guard's webhook");
    t.same(await secretData(pgSecret), before, 'nothing changed');
    const same = await tryUpgrade(['--dry-run=server', '--hide-secret', '-f', values], { captureStdout: true });
    t.equal(same.status, 0, `the same password passes the server dry-run: ${same.stderr}`);
    await helmOk('upgrade', '-f', values);
    t.pass('the same password goes through');
  },
);

// deploy.sh as the operator runs it, with the real kubectl and helm on this cluster (its PVC, its Secrets).
const deploySh = (args: string[], extra: Record<string, string>): Promise<CommandResult> =>
  run('bash', [join(chartDir, 'deploy.sh'), ...args], {
    env: { ...cp.env(), KUBECTL: binary('kubectl'), HELM: binary('helm'), ...extra },
    timeoutMs: 120_000,
    captureStdout: true,
  });
// Runs the `export X="$(kubectl ...)"` line deploy.sh printed, with the real kubectl, and checks what it read.
const readsBack = async (stderr: string, variable: string, expected: string): Promise<boolean> => {
  const script = readBackScript(stderr, variable);
  if (!script) return false;
  const r = await run('bash', ['-c', script], {
    env: { ...cp.env(), PATH: `${dirname(binary('kubectl'))}:${process.env.PATH}`, EXPECTED: expected },
  });
  return r.status === 0;
};

t.test(
  'deploy.sh on this cluster: the refusals read the real Secrets, and the commands they print read the values back',
  async (t) => {
    const password = required.postgresql.auth.password;
    const key = required.secrets.difySecretKey;
    const noKey = await deploySh([], { POSTGRES_PASSWORD: password });
    t.equal(noKey.status, 1);
    t.match(noKey.stderr, `既存のインストールです (Secret ${releaseName('appSecrets')} があります)`);
    t.notMatch(noKey.stderr, 'openssl rand', 'never told to generate a new SECRET_KEY');
    t.ok(await readsBack(noKey.stderr, 'DIFY_SECRET_KEY', key), 'the printed command returns the installed SECRET_KEY');
    const other = await deploySh([], { POSTGRES_PASSWORD: testSecret(), DIFY_SECRET_KEY: key });
    t.equal(other.status, 1);
    t.match(other.stderr, 'POSTGRES_PASSWORD が Secret dify-postgresql の現在のパスワードと一致しません');
    t.match(other.stderr, `kubectl delete pvc -n ${namespace} ${pvcName}`);
    t.ok(
      await readsBack(other.stderr, 'POSTGRES_PASSWORD', password),
      'the printed command returns the password the PVC keeps',
    );
    const same = await deploySh(['--dry-run'], { POSTGRES_PASSWORD: password, DIFY_SECRET_KEY: key });
    t.equal(same.status, 0, same.stderr);
    t.notMatch(same.stderr, /警告/, 'the same password: no warning');
  },
);

t.test(
  'deploy.sh on this cluster: a hook Job nothing runs: what it waits for, progress, then the next commands',
  async (t) => {
    const job = releaseName('migrationJob');
    const r = await deploySh(['--timeout', '20s'], {
      POSTGRES_PASSWORD: required.postgresql.auth.password,
      DIFY_SECRET_KEY: required.secrets.difySecretKey,
      DEPLOY_PROGRESS_INTERVAL: '3',
    });
    t.not(r.status, 0, 'helm fails: no Job controller runs the hook here');
    t.match(r.stderr, `migration Job ${job} の完了を最大 20s 待ちます (--timeout 20s)`);
    t.match(
      r.stderr,
      new RegExp(`待機中 \\(\\d+ 秒経過 / 最大 20s\\): Job ${job}: active=0 succeeded=0 failed=0 Pod: なし`),
      'the hook Job, read with the real kubectl',
    );
    t.match(
      r.stderr,
      `準備ができていない Deployment: ${releaseName('component', contract.components.api)}(0/1)`,
      'no pod ever runs here, so the Deployments are listed as not ready',
    );
    t.match(r.stderr, 'エラー: helm が失敗しました');
    t.match(r.stderr, `kubectl logs -n ${namespace} job/${job}`);
    t.match(r.stderr, `kubectl describe job -n ${namespace} ${job}`);
  },
);

t.test(
  "the guide's uninstall: helm uninstall succeeds, removes every webhook configuration, keeps the PostgreSQL Secret",
  async (t) => {
    const pgSecret = releaseName('postgresqlSecret');
    const before = await secretData(pgSecret);
    const un = await cp.helm(['uninstall', release, '--namespace', namespace, '--no-hooks']);
    t.match(un.stdout, /uninstalled/);
    t.match(
      un.stdout,
      new RegExp(`kept due to the resource policy:[\\s\\S]*\\[Secret\\] ${pgSecret}`),
      'Helm says what it kept',
    );
    t.same(await webhookConfigs(), [], 'no webhook configuration left behind to block the namespace or other releases');
    t.ok(
      await exists(['secret', '-n', namespace, pgSecret]),
      'the Secret stays with the PVC whose password it records',
    );
    t.notOk(await exists(['secret', '-n', namespace, tlsSecret]), "dify-guard's own Secret is removed");

    // A reinstall over the kept PVC: no webhook is registered yet, so the chart itself refuses another password...
    const other = await tryUpgrade(['--install', '-f', otherPassword]);
    t.not(other.status, 0, 'reinstall with another password refused');
    t.match(other.stderr, refusal(pgSecret));
    t.match(other.stderr, `kubectl delete pvc -n ${namespace} ${pvcName}`, 'with the way out');
    t.same(await secretData(pgSecret), before, 'the kept password is untouched');
    // ...and deploy.sh's `helm upgrade --install` with the same password adopts the kept Secret.
    await helmOk('upgrade', '--install', '-f', values);
    t.same(await secretData(pgSecret), before, 'adopted unchanged');
    await cp.helm(['uninstall', release, '--namespace', namespace, '--no-hooks']);
    // The kept Secret deleted by hand (no webhook is registered now): nothing can tell the PVC's password any more.
    t.equal((await cp.kubectl(['delete', 'secret', '-n', namespace, pgSecret])).status, 0);
    const secrets = { POSTGRES_PASSWORD: testSecret(), DIFY_SECRET_KEY: testSecret() };
    const unverifiable = await deploySh(['--dry-run'], secrets);
    t.equal(unverifiable.status, 1, 'deploy.sh refuses: PVC without its Secret');
    t.match(
      unverifiable.stderr,
      `PVC ${pvcName} (namespace ${namespace}) があるのに、そのパスワードを記録した Secret ${pgSecret} がありません`,
    );
    t.match(unverifiable.stderr, '--password-matches-volume');
    const stated = await deploySh(['--dry-run', '--password-matches-volume'], secrets);
    t.equal(stated.status, 0, `with the operator's statement it goes on: ${stated.stderr}`);
    const ns = await cp.kubectl(['delete', 'namespace', namespace, '--wait=false']);
    t.equal(ns.status, 0, ns.stderr);
  },
);
