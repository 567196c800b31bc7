// src/cluster against a real kube-apiserver + etcd (harness/controlplane/harness.ts), as a user holding
// only the RBAC the chart grants dify-guard: the PVC cache follows creates, deletes and an API server
// outage; the Warning Events pass the API server's validation, aggregate into a series, and show
// in `kubectl events --for secret/...`.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { SecretEventRecorder } from '../../src/audit/event-recorder.js';
import { eventsApiFor } from '../../src/audit/events-api.js';
import { PvcCache, pvcSourceFor } from '../../src/cluster/pvc-cache.js';
import { startControlPlane, type ControlPlane } from '../../harness/controlplane/harness.js';
import { issueClientCert } from '../../harness/controlplane/pki.js';
import { paths } from '../../harness/kube-rest.js';
import { pvcManifest } from '../../harness/manifests.js';
import { captureLog } from '../server/support.js';
import { eventually } from '../../harness/commands.js';

const NS = 'pvc-cache-test';
const PVC = 'data-dify-postgresql-0';

/** A KubeConfig for a user bound to exactly the ClusterRole dify-guard needs (least privilege: SECURITY.md). */
async function guardKubeConfig(cp: ControlPlane): Promise<KubeConfig> {
  const admin = cp.rest();
  await admin.ok('POST', '/apis/rbac.authorization.k8s.io/v1/clusterroles', {
    body: {
      metadata: { name: 'dify-guard-test' },
      rules: [
        { apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: ['', 'events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
      ],
    },
  });
  await admin.ok('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
    body: {
      metadata: { name: 'dify-guard-test' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'dify-guard-test' },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'dify-guard-test' }],
    },
  });
  const cert = issueClientCert(join(cp.dir, 'pki'), 'dify-guard-test', []);
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: 'test',
        server: cp.server,
        caData: readFileSync(cp.pki.serving.caFile).toString('base64'),
        skipTLSVerify: false,
      },
    ],
    users: [
      {
        name: 'dify-guard-test',
        certData: readFileSync(cert.certFile).toString('base64'),
        keyData: readFileSync(cert.keyFile).toString('base64'),
      },
    ],
    contexts: [{ name: 'test', cluster: 'test', user: 'dify-guard-test' }],
    currentContext: 'test',
  });
  return kc;
}

const pvcBody = (name: string) => pvcManifest(name);

t.test('against a real API server', async (t) => {
  const cp = await startControlPlane(t, { name: 'cluster' });
  const admin = cp.rest();
  await admin.ok('POST', paths.namespaces, { body: { metadata: { name: NS } } });
  const kc = await guardKubeConfig(cp);

  await t.test('the PVC cache', async (t) => {
    const captured = captureLog();
    const cache = new PvcCache({
      source: pvcSourceFor(kc),
      log: captured.log,
      backoff: { initialMs: 100, maxMs: 1000 },
    });
    t.teardown(() => cache.stop());
    t.equal(cache.state(NS, PVC), 'unknown', 'unknown before the first list');
    cache.start();
    await cache.whenSynced();
    t.equal(cache.state(NS, PVC), 'absent');

    await admin.ok('POST', paths.pvcs(NS), { body: pvcBody(PVC) });
    await eventually('the created PVC to be seen', () => cache.state(NS, PVC) === 'present');

    // No controller-manager runs here, so the pvc-protection finalizer keeps a deleted PVC Terminating:
    // the data is still there, and the cache still says present.
    await admin.ok('DELETE', paths.pvc(NS, PVC));
    const terminating = await admin.ok('GET', paths.pvc(NS, PVC));
    t.ok((terminating.metadata as { deletionTimestamp?: string }).deletionTimestamp, 'Terminating');
    t.equal(cache.state(NS, PVC), 'present', 'a Terminating PVC still holds the data');
    await admin.ok('PATCH', paths.pvc(NS, PVC), {
      body: { metadata: { finalizers: null } },
      contentType: 'application/merge-patch+json',
    });
    await eventually('the deleted PVC to be gone', () => cache.state(NS, PVC) === 'absent');

    await t.test('an API server outage: unknown until it lists again', async (t) => {
      await cp.stopApiServer();
      await eventually('the cache to notice the outage', () => cache.state(NS, PVC) === 'unknown', 60_000);
      t.equal(cache.synced, false);
      await cp.startApiServer();
      await cache.whenSynced();
      t.equal(cache.state(NS, PVC), 'absent');
      await admin.ok('POST', paths.pvcs(NS), { body: pvcBody(PVC) });
      await eventually('a PVC created after the outage to be seen', () => cache.state(NS, PVC) === 'present');
      t.ok(
        captured
          .lines()
          .some((l) => l.msg === 'PVC list/watch failed: password changes are refused until it lists again'),
        'the outage was logged',
      );
    });
  });

  await t.test('Warning Events on the Secret', async (t) => {
    const secret = await admin.ok('POST', paths.secrets(NS), {
      body: { metadata: { name: 'dify-postgresql' }, stringData: { 'postgres-password': 'Event-Test-Pass-5d1e' } },
    });
    const secretUid = (secret.metadata as { uid: string }).uid;
    const captured = captureLog();
    let failures = 0;
    const recorder = new SecretEventRecorder({
      api: eventsApiFor(kc),
      log: captured.log,
      reportingController: 'dify-guard.io/admission-webhook',
      reportingInstance: 'dify-guard-test-0',
      onFailure: () => {
        failures += 1;
      },
    });
    const event = {
      namespace: NS,
      secretName: 'dify-postgresql',
      secretUid,
      reason: 'PasswordChangeUnderPvc',
      action: 'DenyUpdate',
      note: `Secret ${NS}/dify-postgresql: refused. ${'A long operator message. '.repeat(60)}`,
    };
    recorder.record(event);
    await recorder.idle();
    t.equal(failures, 0, captured.text());
    recorder.record(event);
    recorder.record(event);
    await recorder.idle();
    t.equal(failures, 0, captured.text());

    const list = await admin.ok('GET', `/apis/events.k8s.io/v1/namespaces/${NS}/events`);
    const items = list.items as {
      regarding: { uid?: string; kind: string; name: string };
      reason: string;
      type: string;
      note: string;
      series?: { count: number };
    }[];
    t.equal(items.length, 1, 'three records, one Event');
    const stored = items[0]!;
    t.match(stored, {
      type: 'Warning',
      reason: 'PasswordChangeUnderPvc',
      regarding: { kind: 'Secret', name: 'dify-postgresql', uid: secretUid },
    });
    t.equal(stored.series?.count, 3, 'repeats folded into the series');
    t.ok(Buffer.byteLength(stored.note) <= 1024, 'the note was cut to the API limit');

    // What an operator runs (kubectl describe secret has no Events section).
    const events = await cp.kubectl(['events', '-n', NS, '--for', 'secret/dify-postgresql', '--types=Warning']);
    t.equal(events.status, 0, events.stderr);
    t.match(
      events.stdout,
      /Warning\s+PasswordChangeUnderPvc\s+Secret\/dify-postgresql/,
      'kubectl events --for secret/... lists it',
    );
    const core = await admin.ok('GET', paths.events(NS));
    t.equal((core.items as unknown[]).length, 1, 'the core/v1 view shows the same single Event');
  });
});
