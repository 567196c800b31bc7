// The README's main-job command, run as a user runs it (`npm run demo`, here with --once so it
// exits after the walkthrough): deploy.sh installs on the cluster tier, the corrected pod, the refused
// password change with its audit trail from an in-cluster replica, the metrics address; and nothing left behind.
import t from 'tap';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ENV, contract } from '../../src/contract.js';
import { repoRoot } from '../../harness/binaries.js';
import { run } from '../../harness/commands.js';

const routes = async (): Promise<string> => (await run('ip', ['route', 'show', 'table', 'local'])).stdout;

t.test('npm run demo -- --once', async (t) => {
  const res = await run('npm', ['run', '--silent', 'demo', '--', '--once'], {
    cwd: repoRoot,
    timeoutMs: 600_000,
    captureStdout: true,
  });
  const out = res.stdout;
  t.equal(
    res.status,
    0,
    res.status === 0 ? 'the demo exits 0' : `the demo failed:\n${res.stderr}\n${out.slice(-3000)}`,
  );
  t.match(
    out,
    /\| 実行: helm upgrade --install dify \S+\/chart .*--set-file 'postgresql.auth.password=\*\*\*'/,
    "deploy.sh's own output, password masked",
  );
  t.match(
    out,
    /\| helm は post-install \/ post-upgrade hook の migration Job dify-db-migration の完了を最大 20m 待ちます/,
    'what helm waits for',
  );
  t.match(out, /\| STATUS: deployed/, 'the chart is installed by deploy.sh');
  t.match(out, /\| helm が完了しました/, 'deploy.sh finishes');
  t.match(
    out,
    /dify-db-migration-\S+\s+0\/1\s+Completed/,
    'the Job controller ran the hook Job; kwok completed its pod',
  );
  t.match(
    out,
    new RegExp(`${ENV.migrationEnabled}\\s+= "true"[\\s\\S]*${ENV.migrationEnabled}\\s+= "false"`),
    'the pod before and after',
  );
  t.match(out, `${ENV.dbPassword}        = <a literal password, not shown>`, 'the literal is shown as hidden');
  t.match(out, new RegExp(`${ENV.dbPassword}\\s+<- Secret`), 'DB_PASSWORD from the Secret after');
  t.match(
    out,
    `admission webhook "${contract.webhook.secretWebhookName}" denied the request`,
    'the refusal the user sees',
  );
  t.match(out, 'it does not accept this password yet', 'dify-guard asked the real PostgreSQL behind dify-postgresql-0');
  t.match(out, 'rotate without losing data', 'the full message, with the ways out');
  t.match(out, /dify-guard audit record \(JSON log line of replica dify-guard-\S+\)/, 'from an in-cluster replica');
  t.match(out, '"reason": "PasswordChangeUnderPvc"', 'the dify-guard audit record');
  t.match(out, `"${contract.webhook.secretWebhookName}/decision": "denied"`, 'the API server audit annotations');
  t.match(out, /Warning\s+PasswordChangeUnderPvc\s+secret\//, 'the Warning Event');
  t.equal([...out.matchAll(/denied the request/g)].length, 1, 'one denial, the one shown');
  const metrics = /http:\/\/(198\.18\.\d+\.\d+):8080\/metrics {2}\(replica dify-guard-\S+; (\d+) samples\)/.exec(out);
  t.ok(metrics && Number(metrics[2]) > 0, "the metrics address on a replica's pod address answered");
  t.match(out, 'Stopped; the routes, the temporary folders');
  const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const prefix = escape(join(tmpdir(), 'dify-guard-demo-'));
  const dirs = [...out.matchAll(new RegExp(`${prefix}[A-Za-z0-9]+`, 'g'))].map((m) => m[0]);
  t.ok(dirs.length > 0 && dirs.every((d) => !existsSync(d)), 'the temporary folder is gone');
  const range = /pod addresses (198\.18\.\d+\.0\/24)/.exec(out)?.[1];
  t.ok(range, 'the demo named its pod range');
  t.notMatch(await routes(), `local ${range ?? 'none'} `, 'its route is removed');
  const pg = /127\.0\.0\.1:(\d+) \(scram-sha-256/.exec(out)?.[1];
  t.match(
    out,
    new RegExp(
      `\\$ kubectl logs -n dify job/dify-db-migration -c wait-for-postgresql .*\\n\\s+127\\.0\\.0\\.1:${pg} - `,
    ),
    "the init container's log: what its pg_isready printed about the demo's PostgreSQL",
  );
  const commandLines = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ');
      } catch {
        return '';
      }
    })
    .join('\n');
  t.notMatch(
    commandLines,
    // Its own PostgreSQL and folder only: another demo may be running on this machine.
    new RegExp(`port=${pg ?? 'none'}\\b|${[...new Set(dirs)].map(escape).join('|') || 'none'}`),
    'no PostgreSQL or cluster process left',
  );
});
