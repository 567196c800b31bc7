// `npm run demo`: a real kube-apiserver + etcd on this machine, the real dify-guard (dist/src/main.js,
// as in the image), and the chart installed with helm. Shows a Dify pod being corrected and a
// PostgreSQL password change being refused with its audit trail, then keeps running for kubectl.
// Ctrl-C stops everything and removes the temporary folder. `--once` exits after the walkthrough.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ENV, SECRET_KEYS, contract, expandName } from '../src/contract.js';
import { binary, binDir } from '../test/support/binaries.js';
import { run, waitFor, type CommandResult } from '../test/support/commands.js';
import { paths, type Json } from '../test/support/kube-rest.js';
import { onInterrupt } from '../test/support/processes.js';
import { chartDir, podFromTemplate, randomSecret, testValues, writeValues } from '../test/controlplane/chart.js';
import { createStatefulSetPvc, runWithHookJob } from '../test/controlplane/controllers.js';
import { DifyGuard } from '../test/controlplane/dify-guard.js';
import { ControlPlane } from '../test/controlplane/harness.js';

const once = process.argv.includes('--once');
const release = 'dify';
const namespace = 'dify';
const secretName = expandName(contract.names.postgresqlSecret, release);
const started = Date.now();

const say = (text = ''): void => { process.stdout.write(`${text}\n`); };
const step = (n: number, title: string): void => say(`\n== [${n}/6] ${title}  (${((Date.now() - started) / 1000).toFixed(1)} s)`);
const indent = (text: string, by = '    '): string => text.trimEnd().split('\n').map((l) => by + l).join('\n');

let cp: ControlPlane | undefined;
let guard: DifyGuard | undefined;
const stopAll = async (): Promise<void> => {
  say('\nStopping dify-guard, kube-apiserver and etcd ...');
  await guard?.stop();
  await cp?.stop();
  say('Stopped; the temporary folder is removed.');
};
onInterrupt(stopAll);

step(1, 'Binaries: kube-apiserver, etcd, kubectl, helm (test/controlplane/binaries/install.sh; built once with Go, then cached)');
const bin = binDir();
say(`    ${bin}`);

step(2, 'A local control plane: etcd + kube-apiserver on 127.0.0.1 (no kubelet, no controllers)');
cp = await ControlPlane.start({ name: 'demo' });
say(`    API server ${cp.server}, audit log ${cp.auditLogPath}`);

step(3, 'dify-guard: node dist/src/main.js with a certificate from certs/generate.sh');
guard = await DifyGuard.start(cp, { entry: 'dist' });
say(`    webhooks at ${guard.url('/')} (ready: PVC cache synced), log ${guard.process.logPath}`);

step(4, `helm upgrade --install ${release} ./chart -n ${namespace} (dify-guard outside the cluster: webhook.url)`);
const rest = cp.rest();
// The demo password lives only in this 0600 values file; it is never printed.
const valuesFile = writeValues(cp.dir, 'demo', testValues({ url: guard.url(''), caBundle: guard.caBundle }));
say(`    values: ${valuesFile} (demo password inside, mode 0600)`);
say('    No Job controller runs here: when helm waits for the post-install hook Job, the demo creates');
say('    its pod (through dify-guard) and marks the Job complete, as the Job controller would.');
const helmArgs = ['upgrade', '--install', release, chartDir, '--namespace', namespace, '--create-namespace', '-f', valuesFile, '--timeout', '3m'];
const installed = await runWithHookJob(rest, namespace, expandName(contract.names.migrationJob, release),
  () => run(binary('helm'), helmArgs, { env: cp.env(), timeoutMs: 240_000 }));
if (installed.result.status !== 0) throw new Error(`helm failed:\n${installed.result.stderr}`);
say(indent(installed.result.stdout.split('\n').filter((l) => /^(NAME|NAMESPACE|STATUS|REVISION):/.test(l)).join('\n')));

step(5, 'A Dify api pod with MIGRATION_ENABLED=true and a literal DB_PASSWORD, as Deployment dify-api would create it');
const deployment = await rest.ok('GET', `/apis/apps/v1/namespaces/${namespace}/deployments/${expandName(contract.names.component, release, contract.components.api)}`);
const pod = podFromTemplate(deployment, namespace);
const container = ((pod.spec as Json).containers as Json[])[0] as Json;
const env = container.env as Json[];
const literal = randomSecret();
const setVar = (entry: Json): void => { const i = env.findIndex((e) => e.name === entry.name); if (i >= 0) env[i] = entry; else env.push(entry); };
setVar({ name: ENV.migrationEnabled, value: 'true' });
setVar({ name: ENV.dbPassword, value: literal });
const shown = [ENV.migrationEnabled, ENV.dbPassword, ENV.redisHost, ENV.redisPort];
const describeEnv = (list: Json[]): string => shown.map((name) => {
  const e = list.find((x) => x.name === name);
  if (!e) return `${name.padEnd(18)} (absent)`;
  if (e.value === literal) return `${name.padEnd(18)} = <a literal password, not shown>`;
  const ref = (e.valueFrom as Json | undefined)?.secretKeyRef as Json | undefined;
  return ref ? `${name.padEnd(18)} <- Secret ${String(ref.name)}, key ${String(ref.key)}` : `${name.padEnd(18)} = ${JSON.stringify(e.value)}`;
}).join('\n');
say('    sent to the API server:');
say(indent(describeEnv(env), '      '));
const created = await rest.create(paths.pods(namespace), pod);
if (created.status !== 201) throw new Error(`pod create: ${created.status} ${String(created.body.message)}`);
const storedEnv = ((((created.body.spec as Json).containers as Json[])[0] as Json).env as Json[]);
say(`    stored as pod ${String((created.body.metadata as Json).name)} (after pods.dify-guard.io):`);
say(indent(describeEnv(storedEnv), '      '));
say('    warnings the client received:');
say(indent(created.warnings.join('\n'), '      '));

step(6, 'Changing the PostgreSQL password while its PVC exists');
const sts = await rest.ok('GET', `/apis/apps/v1/namespaces/${namespace}/statefulsets/${expandName(contract.names.postgresql, release)}`);
const pvcName = await createStatefulSetPvc(rest, sts);
say(`    PVC ${namespace}/${pvcName} created from the StatefulSet's volumeClaimTemplate (as its controller would).`);
await waitFor('dify-guard to see the PVC', async () => {
  const next = randomSecret();
  const r = await rest.patch(paths.secret(namespace, secretName), 'merge', { stringData: { [SECRET_KEYS.postgresPassword]: next, [SECRET_KEYS.password]: next } }, { dryRun: 'All' });
  return r.status === 403 ? true : undefined;
});
const patchFile = join(cp.dir, 'new-password.patch.json');
const next = randomSecret();
writeFileSync(patchFile, JSON.stringify({ stringData: { [SECRET_KEYS.postgresPassword]: next, [SECRET_KEYS.password]: next } }), { mode: 0o600 });
const kubectlArgs = ['patch', 'secret', secretName, '-n', namespace, '--type', 'merge', '--patch-file', patchFile];
say(`    $ kubectl ${kubectlArgs.join(' ')}`);
const refused: CommandResult = await cp.kubectl(kubectlArgs);
say(indent(`${refused.stderr}${refused.stdout}`.replace(/\. /g, '.\n  '), '    '));
say(`    (kubectl exit code ${refused.status})`);

const line = await guard.waitForLog('the audit line', (l) => l.audit === true && l.dryRun === false && l.reason === 'PasswordChangeUnderPvc');
say('\n    dify-guard audit record (JSON log line):');
const { message: _message, ...record } = line;
say(indent(JSON.stringify(record, null, 2), '      '));
const apiAudit = await cp.waitForAuditEvent('the API server audit event', (e) =>
  e.objectRef?.name === secretName && e.verb === 'patch' && e.responseStatus?.code === 403 && e.stage === 'ResponseComplete' && !e.requestURI.includes('dryRun'));
say(`\n    the API server's audit log (${cp.auditLogPath}):`);
say(indent(JSON.stringify({
  auditID: apiAudit.auditID, verb: apiAudit.verb, user: apiAudit.user.username, objectRef: apiAudit.objectRef, code: apiAudit.responseStatus?.code,
  annotations: Object.fromEntries(Object.entries(apiAudit.annotations ?? {}).filter(([k]) => k.startsWith(`${contract.webhook.secretWebhookName}/`))),
}, null, 2), '      '));
await waitFor('the Warning Event', async () => {
  const r = await cp?.kubectl(['get', 'events', '-n', namespace, '--field-selector', `involvedObject.name=${secretName}`, '-o', 'name']);
  return r?.stdout.trim() ? true : undefined;
});
const events = await cp.kubectl(['get', 'events', '-n', namespace, '--field-selector', `involvedObject.name=${secretName}`]);
say('\n    $ kubectl get events -n dify --field-selector involvedObject.name=dify-postgresql');
say(indent(events.stdout, '      '));

if (once) {
  await stopAll();
  process.exit(0);
}

say(`
== Running. Try it yourself from another terminal (${((Date.now() - started) / 1000).toFixed(1)} s so far):

  export KUBECONFIG=${cp.kubeconfigPath}
  export PATH=${bin}:$PATH    # kubectl and helm built for this demo

  kubectl get deployments,statefulsets,jobs,pods,secrets,pvc -n ${namespace}
  kubectl get events -n ${namespace}
  helm status ${release} -n ${namespace}
  # refused while the PVC exists (both keys must hold the same password):
  kubectl patch secret ${secretName} -n ${namespace} --type merge -p '{"stringData":{"${SECRET_KEYS.postgresPassword}":"another","${SECRET_KEYS.password}":"another"}}'
  # delete the PVC (no controller-manager here, so also drop its protection finalizer), then the same change is allowed:
  kubectl delete pvc -n ${namespace} ${pvcName} --wait=false && kubectl patch pvc -n ${namespace} ${pvcName} -p '{"metadata":{"finalizers":null}}'

  tail -f ${guard.process.logPath}    # dify-guard's JSON log
  tail -f ${cp.auditLogPath}    # the API server's audit log
  (everything lives in ${dirname(cp.kubeconfigPath)})

Press Ctrl-C to stop everything.`);
// Keeps the event loop alive until Ctrl-C.
setInterval(() => undefined, 1 << 30);
