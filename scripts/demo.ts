// `npm run demo`: the operators' workflow on a cluster on this machine. A real kube-apiserver + etcd,
// kube-controller-manager and kube-scheduler, kwok for the nodes (harness/controlplane/cluster.ts);
// dify-guard's pods served by real dify-guard processes (dist/src/main.js) on their pod addresses;
// `kubectl exec dify-postgresql-0 -- psql` mapped to a real PostgreSQL 15, the migration Job's init
// container run against it, and the containers that cannot run here saying so (test/controlplane/
// dify-local.ts). Installs with chart/deploy.sh
// as the guide does, shows a Dify pod corrected and a PostgreSQL password change refused with its audit
// trail, then keeps running for the guide's commands. Ctrl-C stops everything and removes what it made.
// `--once` exits after the walkthrough. No password is ever printed.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ENV, contract, expandName } from '../src/contract.js';
import { binDir } from '../harness/binaries.js';
import { waitFor } from '../harness/commands.js';
import { paths, type Json } from '../harness/kube-rest.js';
import { startPostgres, type LocalPostgres } from '../harness/programs/postgres.js';
import { onInterrupt } from '../harness/processes.js';
import { chartDir, podFromTemplate, randomSecret } from '../harness/controlplane/chart.js';
import { Cluster } from '../harness/controlplane/cluster.js';
import { SETTINGS } from '../src/config.js';
import { WAIT_FOR_POSTGRESQL, difyLocalOptions, startMigrationInit } from '../harness/controlplane/dify-local.js';
import { GUARD_POD_LABEL, GuardPods } from '../harness/controlplane/guard-pods.js';
import type { InitContainers } from '../harness/controlplane/init-containers.js';
import { passwordChange, waitForRollouts } from '../harness/controlplane/release.js';

const once = process.argv.includes('--once');
const release = 'dify';
const namespace = 'dify';
const secretName = expandName(contract.names.postgresqlSecret, release);
const started = Date.now();
process.env.DIFY_GUARD_ENTRY = 'dist';

const say = (text = ''): void => {
  process.stdout.write(`${text}\n`);
};
const elapsed = (): string => `${((Date.now() - started) / 1000).toFixed(1)} s`;
const step = (n: number, title: string): void => say(`\n== [${n}/7] ${title}  (${elapsed()})`);
const indent = (text: string, by = '    '): string =>
  text
    .trimEnd()
    .split('\n')
    .map((l) => by + l)
    .join('\n');

/** What is running so far, for Ctrl-C at any point. */
const running: { cluster?: Cluster; guards?: GuardPods; migrationInit?: InitContainers; pg?: LocalPostgres } = {};
const stopAll = async (): Promise<void> => {
  say('\nStopping the dify-guard pods, kwok, the controllers, kube-apiserver, etcd and PostgreSQL ...');
  await running.migrationInit?.stop();
  await running.guards?.stop();
  await running.cluster?.stop();
  await running.pg?.stop();
  say("Stopped; the routes, the temporary folders and this cluster's /tmp/hostpath_pv folders are removed.");
};
onInterrupt(stopAll);

// The operator's secrets: in this process's environment for deploy.sh only, never printed.
const password = randomSecret();
const secretKey = randomSecret();

step(
  1,
  "PostgreSQL 15 (Debian's) for `kubectl exec dify-postgresql-0 -- psql`: user dify, database dify, POSTGRES_PASSWORD",
);
const pg = await startPostgres({ user: 'dify', database: 'dify', password });
running.pg = pg;
say(`    127.0.0.1:${pg.port} (scram-sha-256 over TCP, trust on its socket, as inside the container)`);

step(2, 'A cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler (real); kwok for the kubelets');
const bin = binDir();
const cluster = await Cluster.start({
  name: 'demo',
  servedPods: GUARD_POD_LABEL,
  ...difyLocalOptions(pg, { namespace, release }),
});
running.cluster = cluster;
const { cp, rest } = cluster;
say(
  `    API server ${cp.server}; nodes ${cluster.nodeNames.join(', ')};` +
    ` pod addresses ${cluster.podRange?.cidr ?? ''} (routed to this machine)`,
);
// No cluster DNS here: dify-guard's check of a password change asks the real PostgreSQL behind the
// simulated dify-postgresql-0 (the same server `kubectl exec dify-postgresql-0 -- psql` reaches).
const guards = new GuardPods(cluster, namespace, { [SETTINGS.postgresqlAddressTemplate.env]: `127.0.0.1:${pg.port}` });
running.guards = guards;
guards.start();
say("    dify-guard's pods will be served by real dify-guard processes on their pod addresses.");
const migrationInit = startMigrationInit(cluster, pg, { namespace, release });
running.migrationInit = migrationInit;
say(
  "    The migration Job's init container (pg_isready) will run here against that PostgreSQL;" +
    " Dify's own containers cannot (no image is pulled).",
);

step(3, 'cd chart && ./deploy.sh --image-tag 1.11.4   (POSTGRES_PASSWORD and DIFY_SECRET_KEY in the environment)');
const deployEnv = {
  ...cp.env(),
  PATH: `${bin}:${process.env.PATH ?? ''}`,
  POSTGRES_PASSWORD: password,
  DIFY_SECRET_KEY: secretKey,
  DEPLOY_PROGRESS_INTERVAL: '10',
};
const deployStatus = await new Promise<number>((resolve, reject) => {
  const child = spawn('bash', ['./deploy.sh', '--image-tag', '1.11.4'], {
    cwd: chartDir,
    env: deployEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const show = (chunk: Buffer): void => {
    process.stdout.write(indent(chunk.toString('utf8'), '    | ') + '\n');
  };
  child.stdout.on('data', show);
  child.stderr.on('data', show);
  child.on('error', reject);
  child.on('close', (code) => resolve(code ?? 1));
});
if (deployStatus !== 0) throw new Error(`deploy.sh exited ${deployStatus}\n${cluster.diagnostics()}`);
say('    helm waited only for the hook Job; now the rollouts, as `kubectl rollout status` would:');
await waitForRollouts(rest, namespace);
await migrationInit.printed();
const pods = await cp.kubectl(['get', 'pods', '-n', namespace]);
say('\n    $ kubectl get pods -n dify');
say(indent(pods.stdout, '      '));
const jobName = expandName(contract.names.migrationJob, release);
const initLogArgs = ['logs', '-n', namespace, `job/${jobName}`, '-c', WAIT_FOR_POSTGRESQL];
say(`\n    $ kubectl ${initLogArgs.join(' ')}    (its own command, run here against the PostgreSQL above)`);
say(indent((await cp.kubectl(initLogArgs)).stdout, '      '));

step(
  4,
  'A Dify api pod with MIGRATION_ENABLED=true and a literal DB_PASSWORD, as a hand-edited Deployment would create it',
);
const apiName = expandName(contract.names.component, release, contract.components.api);
const deployment = await rest.ok('GET', `/apis/apps/v1/namespaces/${namespace}/deployments/${apiName}`);
const pod = podFromTemplate(deployment, namespace);
const env = (((pod.spec as Json).containers as Json[])[0] as Json).env as Json[];
const literal = randomSecret();
const setVar = (entry: Json): void => {
  const i = env.findIndex((e) => e.name === entry.name);
  if (i >= 0) env[i] = entry;
  else env.push(entry);
};
setVar({ name: ENV.migrationEnabled, value: 'true' });
setVar({ name: ENV.dbPassword, value: literal });
const shown = [ENV.migrationEnabled, ENV.dbPassword];
const describeEnv = (list: Json[]): string =>
  shown
    .map((name) => {
      const e = list.find((x) => x.name === name);
      if (!e) return `${name.padEnd(18)} (absent)`;
      if (e.value === literal) return `${name.padEnd(18)} = <a literal password, not shown>`;
      const ref = (e.valueFrom as Json | undefined)?.secretKeyRef as Json | undefined;
      return ref
        ? `${name.padEnd(18)} <- Secret ${String(ref.name)}, key ${String(ref.key)}`
        : `${name.padEnd(18)} = ${JSON.stringify(e.value)}`;
    })
    .join('\n');
say('    sent to the API server:');
say(indent(describeEnv(env), '      '));
const created = await rest.create(paths.pods(namespace), pod);
if (created.status !== 201) throw new Error(`pod create: ${created.status} ${String(created.body.message)}`);
const storedEnv = (((created.body.spec as Json).containers as Json[])[0] as Json).env as Json[];
say(
  `    stored as pod ${String((created.body.metadata as Json).name)} (after dify-guard's pods webhook, served in the cluster):`,
);
say(indent(describeEnv(storedEnv), '      '));
say('    warnings the client received:');
say(indent(created.warnings.join('\n'), '      '));

step(5, 'Changing the PostgreSQL password while its PVC exists (the StatefulSet controller made it)');
const pvcName = expandName(contract.names.postgresqlPvc, release);
await waitFor(
  `PVC ${pvcName} Bound`,
  async () =>
    (
      (await rest.get(`/api/v1/namespaces/${namespace}/persistentvolumeclaims/${pvcName}`)).body.status as
        Json | undefined
    )?.phase === 'Bound'
      ? true
      : undefined,
  { timeoutMs: 60_000 },
);
const patchFile = join(cp.dir, 'new-password.patch.json');
writeFileSync(patchFile, JSON.stringify(passwordChange()), { mode: 0o600 });
const kubectlArgs = ['patch', 'secret', secretName, '-n', namespace, '--type', 'merge', '--patch-file', patchFile];
say(`    $ kubectl ${kubectlArgs.join(' ')}    (the file holds another password)`);
const refused = await cp.kubectl(kubectlArgs);
say(indent(`${refused.stderr}${refused.stdout}`, '    '));
say(`    (kubectl exit code ${refused.status})`);
if (refused.status === 0) throw new Error('the password change was not refused');

step(6, 'The audit trail');
const denial = (l: Json): boolean => l.audit === true && l.dryRun === false && l.reason === 'PasswordChangeUnderPvc';
const jsonLine = (raw: string): Json | undefined => {
  try {
    return JSON.parse(raw) as Json;
  } catch {
    return undefined; // not JSON
  }
};
const found = await waitFor(
  "the audit line in a dify-guard replica's log",
  () => {
    for (const s of guards.served) {
      const line = (s.process?.log() ?? '')
        .split('\n')
        .map(jsonLine)
        .find((l) => l && denial(l));
      if (line) return { pod: s.name, line };
    }
    return undefined;
  },
  { timeoutMs: 15_000 },
);
say(`    dify-guard audit record (JSON log line of replica ${found.pod}):`);
const { message: _message, ...record } = found.line;
say(indent(JSON.stringify(record, null, 2), '      '));
const apiAudit = await cp.waitForAuditEvent(
  'the API server audit event',
  (e) =>
    e.objectRef?.name === secretName &&
    e.verb === 'patch' &&
    e.responseStatus?.code === 403 &&
    e.stage === 'ResponseComplete',
);
say(`\n    the API server's audit log (${cp.auditLogPath}):`);
say(
  indent(
    JSON.stringify(
      {
        auditID: apiAudit.auditID,
        verb: apiAudit.verb,
        user: apiAudit.user.username,
        objectRef: apiAudit.objectRef,
        code: apiAudit.responseStatus?.code,
        annotations: Object.fromEntries(
          Object.entries(apiAudit.annotations ?? {}).filter(([k]) =>
            k.startsWith(`${contract.webhook.secretWebhookName}/`),
          ),
        ),
      },
      null,
      2,
    ),
    '      ',
  ),
);
const eventArgs = ['get', 'events', '-n', namespace, '--field-selector', `involvedObject.name=${secretName}`];
await waitFor('the Warning Event', async () =>
  (await cp.kubectl([...eventArgs, '-o', 'name'])).stdout.trim() ? true : undefined,
);
say(`\n    $ kubectl ${eventArgs.join(' ')}`);
say(indent((await cp.kubectl(eventArgs)).stdout, '      '));

step(7, 'Metrics');
const replica = guards.readyPods()[0];
const metricsUrl = `http://${replica?.ip ?? '?'}:8080/metrics`;
const metrics = await fetch(metricsUrl).then((r) => r.text());
say(
  `    ${metricsUrl}  (replica ${replica?.name ?? '?'}; ${metrics.split('\n').filter((l) => l && !l.startsWith('#')).length} samples)`,
);

if (once) {
  say(`\nWalkthrough done in ${elapsed()}.`);
  await stopAll();
  process.exit(0);
}

// chart/README.md's table check, as written (one line to paste).
const tableCheck =
  'kubectl exec -n dify dify-postgresql-0 -- psql -U dify -d dify -c ' +
  '"SELECT tablename FROM pg_tables WHERE schemaname = \'public\' ORDER BY tablename;"';
const pluginHealthCheck =
  "kubectl exec -n dify $(kubectl get pods -n dify -l app=dify-plugin-daemon -o jsonpath='{.items[0].metadata.name}')" +
  ' -- curl -s http://localhost:5002/health/check';
say(`
== Running (${elapsed()}). From another terminal, paste these two lines, then type the guide's commands as written:

  export KUBECONFIG=${cp.kubeconfigPath}
  export PATH=${bin}:$PATH    # kubectl and helm built for this demo

  kubectl get pods -n ${namespace}
  kubectl get jobs -n ${namespace}
  kubectl logs -n ${namespace} job/${jobName}    # the migration container: says Dify's image did not run
  kubectl logs -n ${namespace} job/${jobName} -c ${WAIT_FOR_POSTGRESQL}
  ${tableCheck}
  ${pluginHealthCheck}    # says the daemon cannot run here, exits 1
  helm status ${release} -n ${namespace}
  cd ${chartDir} && ./deploy.sh --image-tag 1.11.4    # with POSTGRES_PASSWORD / DIFY_SECRET_KEY read back as chart/README.md shows
  # Job を再実行, in ${chartDir}:
  kubectl delete job -n ${namespace} ${jobName}
  helm upgrade ${release} . -n ${namespace} --reuse-values
  curl -s ${metricsUrl}

  dify-guard replicas' logs: ${guards
    .readyPods()
    .map((p) => p.process?.logPath ?? '')
    .join(' ')}
  the API server's audit log: ${cp.auditLogPath}

Press Ctrl-C to stop everything.`);
// Keeps the event loop alive until Ctrl-C.
setInterval(() => undefined, 1 << 30);
