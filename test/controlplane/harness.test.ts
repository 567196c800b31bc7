// The harness itself: a real API server that stores objects, audits Secret writes, survives a
// restart with its data, answers kubectl and client-node, and leaves nothing behind when stopped.
import t from 'tap';
import { existsSync } from 'node:fs';
import { CoreV1Api } from '@kubernetes/client-node';
import { ControlPlane } from '../../harness/controlplane/harness.js';
import { paths } from '../../harness/kube-rest.js';
import { reservePorts } from '../../harness/ports.js';

t.test('a control plane on loopback', async (t) => {
  const cp = await ControlPlane.start({ name: 'harness' });
  t.teardown(() => cp.stop());
  t.match(cp.server, /^https:\/\/127\.0\.0\.1:\d+$/);

  await t.test('client-node 2.x works with the written kubeconfig', async (t) => {
    const core = cp.kubeConfig().makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'smoke' } } });
    const ns = await core.readNamespace({ name: 'smoke' });
    t.equal(ns.metadata?.name, 'smoke');
  });

  await t.test('kubectl works with the written kubeconfig', async (t) => {
    const r = await cp.kubectl(['get', 'namespace', 'smoke', '-o', 'jsonpath={.metadata.name}']);
    t.equal(r.status, 0, r.stderr);
    t.equal(r.stdout, 'smoke');
  });

  await t.test('a Secret write is in the audit log at Metadata level, with the user who made it', async (t) => {
    const rest = cp.rest({ name: 'alice', groups: ['system:masters'] });
    const res = await rest.create(paths.secrets('smoke'), { metadata: { name: 'audited' }, stringData: { k: 'v' } });
    t.equal(res.status, 201);
    const event = await cp.waitForAuditEvent(
      'create secret smoke/audited',
      (e) =>
        e.verb === 'create' &&
        e.objectRef?.resource === 'secrets' &&
        e.objectRef.name === 'audited' &&
        e.stage === 'ResponseComplete',
    );
    t.equal(event.user.username, 'alice');
    t.equal(event.responseStatus?.code, 201);
    t.notOk('requestObject' in event, 'Metadata level: no request body in the log');
  });

  await t.test('objects survive an API server restart on the same port', async (t) => {
    const server = cp.server;
    await cp.restartApiServer();
    t.equal(cp.server, server);
    const res = await cp.rest().get(paths.secret('smoke', 'audited'));
    t.equal(res.status, 200);
  });

  await t.test('etcd can be stopped and started again with its data', async (t) => {
    await cp.stopEtcd();
    t.notOk(cp.etcd.running);
    await cp.startEtcd();
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      status = (await cp.rest().get(paths.secret('smoke', 'audited'))).status;
      if (status !== 200) await new Promise((r) => setTimeout(r, 200));
    }
    t.equal(status, 200, 'the Secret written before is read back once etcd is up again');
  });

  await t.test('stop() ends every process and removes the folder', async (t) => {
    const pids = [cp.etcd.pid, cp.apiServer.pid];
    await cp.stop();
    for (const pid of pids) {
      t.throws(() => process.kill(pid as number, 0), 'process is gone');
    }
    t.notOk(existsSync(cp.dir), 'temporary folder removed');
  });
});

t.test('reserved ports are not handed out twice', async (t) => {
  const ports = await reservePorts(20);
  t.equal(new Set(ports.map((p) => p.port)).size, 20);
  for (const p of ports) p.release();
});
