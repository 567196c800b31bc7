// The README's main-job command, run as a user runs it (`npm run demo`, here with --once so it
// exits after the walkthrough): it must install, show the corrected pod and the refused password
// change with its audit trail, and leave no process or folder behind.
import t from 'tap';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ENV, contract } from '../../src/contract.js';
import { repoRoot } from '../support/binaries.js';
import { run } from '../support/commands.js';

t.test('npm run demo -- --once', async (t) => {
  const res = await run('npm', ['run', '--silent', 'demo', '--', '--once'], { cwd: repoRoot, timeoutMs: 420_000, captureStdout: true });
  const out = res.stdout;
  t.equal(res.status, 0, res.status === 0 ? 'the demo exits 0' : `the demo failed:\n${res.stderr}\n${out.slice(-3000)}`);
  t.match(out, /STATUS: deployed/, 'the chart is installed');
  t.match(out, new RegExp(`${ENV.migrationEnabled}\\s+= "true"[\\s\\S]*${ENV.migrationEnabled}\\s+= "false"`), 'the pod before and after');
  t.match(out, `${ENV.dbPassword}        = <a literal password, not shown>`, 'the literal is shown as hidden');
  t.match(out, new RegExp(`${ENV.dbPassword}\\s+<- Secret`), 'DB_PASSWORD from the Secret after');
  t.match(out, `admission webhook "${contract.webhook.secretWebhookName}" denied the request`, 'the refusal the user sees');
  t.match(out, '"reason": "PasswordChangeUnderPvc"', 'the dify-guard audit record');
  t.match(out, `"${contract.webhook.secretWebhookName}/decision": "denied"`, 'the API server audit annotations');
  t.match(out, /Warning\s+PasswordChangeUnderPvc\s+secret\//, 'the Warning Event');
  t.match(out, 'Stopped; the temporary folder is removed.');
  const prefix = join(tmpdir(), 'dify-guard-demo-').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const dirs = [...out.matchAll(new RegExp(`${prefix}[A-Za-z0-9]+`, 'g'))].map((m) => m[0]);
  t.ok(dirs.length > 0 && dirs.every((d) => !existsSync(d)), 'the temporary folder is gone');
});
