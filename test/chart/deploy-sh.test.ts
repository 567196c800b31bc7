// chart/deploy.sh, the guide's interface: required env, flags, --dry-run (the helm command with the
// secrets masked), the guide's PVC warning, and secrets handed to helm through private files rather
// than its command line. Stub helm/kubectl scripts record what they receive; shellcheck must pass.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { binary } from '../support/binaries.js';
import type { CommandResult } from '../support/commands.js';
import { chartDir, testSecret } from '../support/helm.js';
import { captureOutput } from '../support/secrets.js';
import { program } from '../support/programs.js';

const script = join(chartDir, 'deploy.sh');
const dir = mkdtempSync(join(tmpdir(), 'dify-deploy-test-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

// helm stub: records its arguments (one per line) and, for every --set-file, the file's mode and content.
const helmStub = join(dir, 'helm');
const helmLog = join(dir, 'helm.log');
writeFileSync(helmStub, `#!/usr/bin/env bash
printf '%s\\n' "$@" > "${helmLog}.args"
: > "${helmLog}.files"
prev=
for a in "$@"; do
  if [ "$prev" = --set-file ]; then
    f=\${a#*=}
    printf '%s %s %s\\n' "\${a%%=*}" "$(stat -c %a "$f")" "$f" >> "${helmLog}.files"
    cp "$f" "${helmLog}.content.\${a%%=*}"
  fi
  prev=$a
done
`);
chmodSync(helmStub, 0o755);

// kubectl stub: a cluster where the PVC exists (STUB_PVC=1) and the Secrets hold STUB_* values; STUB_DOWN=1: unreachable.
const kubectlStub = join(dir, 'kubectl');
writeFileSync(kubectlStub, `#!/usr/bin/env bash
[ "\${STUB_DOWN:-}" = 1 ] && { echo 'The connection to the server was refused' >&2; exit 1; }
case "$*" in
  *"get pvc"*) [ "\${STUB_PVC:-}" = 1 ] && echo "persistentvolumeclaim/$4" ;;
  *"{.data.${SECRET_KEYS.postgresPassword}}"*) [ -n "\${STUB_PG:-}" ] && printf '%s' "$STUB_PG" | base64 -w0 ;;
  *"{.data.secret-key}"*) [ -n "\${STUB_KEY:-}" ] && printf '%s' "$STUB_KEY" | base64 -w0 ;;
  *"{.data.${SECRET_KEYS.redisPassword}}"*) [ -n "\${STUB_REDIS:-}" ] && printf '%s' "$STUB_REDIS" | base64 -w0 ;;
esac
exit 0
`);
chmodSync(kubectlStub, 0o755);

interface Env { [key: string]: string | undefined }
// stdin ignored: the script may exit before a writer to its stdin would finish (EPIPE).
function deploy(args: string[], env: Env = {}): CommandResult {
  rmSync(`${helmLog}.args`, { force: true });
  const r = spawnSync('bash', [script, ...args], {
    env: { PATH: process.env.PATH, HOME: dir, TMPDIR: dir, HELM: helmStub, KUBECTL: kubectlStub, ...env } as NodeJS.ProcessEnv,
    stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 30_000,
  });
  if (r.error) throw r.error;
  captureOutput('deploy.sh.stdout', r.stdout);
  captureOutput('deploy.sh.stderr', r.stderr);
  return { command: `deploy.sh ${args.join(' ')}`, status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const helmCalled = (): boolean => existsSync(`${helmLog}.args`);
const secrets = (): { POSTGRES_PASSWORD: string; DIFY_SECRET_KEY: string } => ({ POSTGRES_PASSWORD: testSecret(), DIFY_SECRET_KEY: testSecret() });

t.test('shellcheck is clean (scripts/dev/prerequisites.sh provides shellcheck)', async (t) => {
  const r = spawnSync(program('shellcheck'), ['--shell=bash', '--severity=style', script], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.error) {
    t.fail(`shellcheck could not run (${r.error.message}): run scripts/dev/prerequisites.sh`);
    return;
  }
  t.equal(r.status, 0, r.stdout);
});

t.test('--help lists the guide\'s options and variables', async (t) => {
  const r = deploy(['--help']);
  t.equal(r.status, 0);
  for (const word of ['--image-tag', '--openai-api-key', '--namespace', '--release', '--values', '--set', '--dry-run', 'POSTGRES_PASSWORD', 'DIFY_SECRET_KEY', 'REDIS_PASSWORD']) {
    t.match(r.stdout, word);
  }
  t.notOk(helmCalled());
});

t.test('POSTGRES_PASSWORD or DIFY_SECRET_KEY unset: a clear error, nothing run', async (t) => {
  const noPg = deploy(['--dry-run', '--image-tag', '1.11.4'], { DIFY_SECRET_KEY: testSecret() });
  t.equal(noPg.status, 1);
  t.match(noPg.stderr, /POSTGRES_PASSWORD が設定されていません.*ランダム生成はしません/s);
  t.match(noPg.stderr, "export POSTGRES_PASSWORD='your-fixed-password'");
  const empty = deploy([], { POSTGRES_PASSWORD: '', DIFY_SECRET_KEY: testSecret() });
  t.equal(empty.status, 1, 'empty counts as unset');
  const noKey = deploy(['--dry-run'], { POSTGRES_PASSWORD: testSecret() });
  t.equal(noKey.status, 1);
  t.match(noKey.stderr, /DIFY_SECRET_KEY が設定されていません/);
  t.match(noKey.stderr, 'openssl rand -hex 32');
  t.notOk(helmCalled());
});

t.test('bad flags and values are usage errors (exit 2)', async (t) => {
  for (const [args, pattern] of [
    [['--bogus'], /不明な引数: --bogus/],
    [['--image-tag'], /--image-tag には値が必要です/],
    [['--namespace', 'Bad_NS'], /namespace 'Bad_NS'/],
    [['--release', 'UPPER'], /リリース名 'UPPER'/],
    [['--values', join(dir, 'missing.yaml')], /values ファイル .* を読めません/],
    [['--set', 'novalue'], /KEY=VALUE/],
    [['--timeout', 'soon'], /--timeout/],
  ] as const) {
    const r = deploy([...args], secrets());
    t.equal(r.status, 2, args.join(' '));
    t.match(r.stderr, pattern, args.join(' '));
    t.match(r.stderr, /--help/);
  }
  t.notOk(helmCalled());
});

t.test('--dry-run prints the helm command with the secrets masked, and runs nothing', async (t) => {
  const env = { ...secrets(), OPENAI_API_KEY: '' };
  const openai = `sk-${testSecret()}`;
  const r = deploy(['--dry-run', '--image-tag', '1.11.4', '--openai-api-key', openai, '--set', `secrets.sandboxApiKey=${testSecret()}`, '--set', 'ingress.host=dify.example.com'], env);
  t.equal(r.status, 0, r.stderr);
  const line = r.stdout.trim();
  t.equal(line.split('\n').length, 1, 'one command line on stdout');
  t.match(line, new RegExp(`^${helmStub} upgrade --install dify ${chartDir} --namespace dify --create-namespace --timeout 20m `));
  t.match(line, "--set-file 'postgresql.auth.password=***'");
  t.match(line, "--set-file 'secrets.difySecretKey=***'");
  t.match(line, "--set-file 'secrets.openaiApiKey=***'");
  t.match(line, "--set 'secrets.sandboxApiKey=***'", 'a passthrough secret is masked too');
  t.match(line, '--set ingress.host=dify.example.com');
  t.match(line, '--set-string image.tag=1.11.4', 'the tag stays a string (1.10 is not 1.1)');
  for (const value of [env.POSTGRES_PASSWORD, env.DIFY_SECRET_KEY, openai]) {
    t.notOk(r.stdout.includes(value) || r.stderr.includes(value), 'no secret printed');
  }
  t.notOk(helmCalled(), 'helm not run');
});

t.test('--namespace and --release change every name, including the PVC that is checked', async (t) => {
  const r = deploy(['--dry-run', '-n', 'team-a', '-r', 'acme'], { ...secrets(), STUB_PVC: '1' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, new RegExp(`upgrade --install acme ${chartDir} --namespace team-a --create-namespace`));
  t.match(r.stderr, expandName(contract.names.postgresqlPvc, 'acme'), 'deploy.sh\'s PVC name is the contract\'s');
});

t.test('the guide\'s warning when data-<release>-postgresql-0 exists; the same password passes', async (t) => {
  const env = secrets();
  const r = deploy(['--dry-run'], { ...env, STUB_PVC: '1', STUB_PG: env.POSTGRES_PASSWORD });
  t.equal(r.status, 0, r.stderr);
  const pvc = expandName(contract.names.postgresqlPvc, 'dify');
  t.match(r.stderr, `警告: PVC ${pvc} (namespace dify) が既に存在します`);
  t.match(r.stderr, /28P01/);
  t.match(r.stderr, `kubectl delete pvc -n dify ${pvc}`);
});

t.test('a POSTGRES_PASSWORD that differs from the kept Secret under the PVC is refused up front', async (t) => {
  const env = secrets();
  const old = testSecret();
  const r = deploy([], { ...env, STUB_PVC: '1', STUB_PG: old });
  t.equal(r.status, 1);
  t.match(r.stderr, `POSTGRES_PASSWORD が Secret ${expandName(contract.names.postgresqlSecret, 'dify')} の現在のパスワードと一致しません`);
  t.notOk(r.stderr.includes(old) || r.stderr.includes(env.POSTGRES_PASSWORD), 'neither password shown');
  t.notOk(helmCalled());
});

t.test('a different DIFY_SECRET_KEY is warned about (sessions end), not refused', async (t) => {
  const r = deploy(['--dry-run'], { ...secrets(), STUB_KEY: testSecret() });
  t.equal(r.status, 0);
  t.match(r.stderr, /DIFY_SECRET_KEY が現在の SECRET_KEY .* と異なります/);
});

t.test('no cluster: the PVC check is skipped with a note (stub, and the real kubectl)', async (t) => {
  const down = deploy(['--dry-run'], { ...secrets(), STUB_DOWN: '1' });
  t.equal(down.status, 0);
  t.match(down.stderr, /クラスタに接続できないため、PVC data-dify-postgresql-0 の有無を確認できませんでした/);
  const real = deploy(['--dry-run'], { ...secrets(), KUBECTL: binary('kubectl'), KUBECONFIG: join(dir, 'none') });
  t.equal(real.status, 0, real.stderr);
  t.match(real.stderr, /確認できませんでした/);
  const missing = deploy(['--dry-run'], { ...secrets(), KUBECTL: join(dir, 'no-such-kubectl') });
  t.equal(missing.status, 0);
  t.match(missing.stderr, /kubectl が見つからない/);
});

t.test('a real run: helm gets the secrets through 0600 files that are gone afterwards, never in its arguments', async (t) => {
  const env = { ...secrets(), REDIS_PASSWORD: testSecret() };
  const openai = `sk-${testSecret()}`;
  const values = join(dir, 'site.yaml');
  writeFileSync(values, 'ingress:\n  host: dify.example.com\n');
  const r = deploy(['--image-tag', '1.11.4', '-f', values], { ...env, OPENAI_API_KEY: openai });
  t.equal(r.status, 0, r.stderr);
  const args = readFileSync(`${helmLog}.args`, 'utf8');
  for (const value of [env.POSTGRES_PASSWORD, env.DIFY_SECRET_KEY, env.REDIS_PASSWORD, openai]) t.notOk(args.includes(value), 'not in helm\'s argv');
  t.match(args, /^upgrade\n--install\ndify\n/);
  t.match(args, '--create-namespace');
  t.match(args, `--values\n${values}`);
  t.notMatch(args, 'pluginDaemon.redis.authEnabled', 'Redis auth is the chart\'s default, not a flag of deploy.sh');
  const files = readFileSync(`${helmLog}.files`, 'utf8').trim().split('\n').map((l) => l.split(' '));
  const expected: Record<string, string> = {
    'postgresql.auth.password': env.POSTGRES_PASSWORD, 'secrets.difySecretKey': env.DIFY_SECRET_KEY,
    'pluginDaemon.redis.password': env.REDIS_PASSWORD, 'secrets.openaiApiKey': openai,
  };
  t.same(files.map(([key]) => key).sort(), Object.keys(expected).sort());
  for (const [key, mode, path] of files) {
    t.equal(mode, '600', `${key}: private file`);
    t.ok(readFileSync(`${helmLog}.content.${key}`, 'utf8') === expected[key!], `${key}: exact value, no newline`);
    t.notOk(existsSync(path!), `${key}: removed when deploy.sh exits`);
  }
  t.notOk(r.stderr.includes(env.POSTGRES_PASSWORD));
});

t.test('REDIS_PASSWORD: optional (the chart generates one), URL-safe, and a change is warned about with the restart command', async (t) => {
  const without = deploy(['--dry-run'], secrets());
  t.equal(without.status, 0, without.stderr);
  t.notMatch(without.stdout, 'pluginDaemon.redis', 'no Redis value without REDIS_PASSWORD: the chart generates and keeps one');
  const given = deploy(['--dry-run'], { ...secrets(), REDIS_PASSWORD: testSecret() });
  t.match(given.stdout, "--set-file 'pluginDaemon.redis.password=***'");
  const bad = `${testSecret()}@x`;
  const refused = deploy([], { ...secrets(), REDIS_PASSWORD: bad });
  t.equal(refused.status, 1);
  t.match(refused.stderr, /REDIS_PASSWORD に使える文字は英数字と \. _ ~ - だけです/);
  t.notOk(refused.stderr.includes(bad), 'the password is not shown');
  t.notOk(helmCalled());
  const changed = deploy(['--dry-run'], { ...secrets(), REDIS_PASSWORD: testSecret(), STUB_REDIS: testSecret() });
  t.equal(changed.status, 0);
  t.match(changed.stderr, /REDIS_PASSWORD が現在の Redis パスワード \(Secret dify-redis\) と異なります/);
  t.match(changed.stderr, 'kubectl rollout restart -n dify statefulset/dify-redis-master');
  t.match(changed.stderr, 'deploy/dify-api deploy/dify-worker deploy/dify-beat deploy/dify-plugin-daemon');
  const same = testSecret();
  const kept = deploy(['--dry-run'], { ...secrets(), REDIS_PASSWORD: same, STUB_REDIS: same });
  t.notMatch(kept.stderr, /Redis パスワード/);
});

// chart/README.md, 28P01 step 5: the command as written, run by bash with kubectl and curl stubbed, hands curl
// the whole URL (an unquoted `&` would split it in the pod's sh); the pod's script passes shellcheck.
t.test('chart/README.md 28P01 step 5: the URL with & reaches curl whole, and the pod\'s sh -c script is shellcheck-clean', async (t) => {
  const readme = readFileSync(join(chartDir, 'README.md'), 'utf8');
  const block = /```bash\n((?:(?!```)[\s\S])*management\/models(?:(?!```)[\s\S])*)```/.exec(readme)?.[1];
  if (!block) { t.fail('step 5 command block not found in chart/README.md'); return; }
  const commands = block.split('\n').map((l) => l.trim()).join('\n');
  const podScript = join(dir, 'pod-script.sh');
  // kubectl stub: `exec ... -- sh -c SCRIPT` saves SCRIPT and runs it with sh; any other call prints a tenant id.
  const harness = `kubectl() { if [ "\${*: -2:1}" != -c ]; then echo 0b6e1c1e-0000-4000-8000-000000000001; return; fi
  printf '%s' "\${*: -1}" > '${podScript}'; PLUGIN_DAEMON_KEY=k PATH='${dir}/curlbin':"$PATH" sh -c "\${*: -1}"; }
${commands}
`;
  const curlDir = join(dir, 'curlbin');
  rmSync(curlDir, { recursive: true, force: true });
  spawnSync('mkdir', [curlDir]);
  writeFileSync(join(curlDir, 'curl'), '#!/bin/sh\nprintf \'%s\\n\' "$@"\n');
  chmodSync(join(curlDir, 'curl'), 0o755);
  const r = spawnSync('bash', ['-c', harness], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  captureOutput('readme-step5.stdout', r.stdout);
  captureOutput('readme-step5.stderr', r.stderr);
  t.equal(r.status, 0, r.stderr);
  const args = r.stdout.trim().split('\n');
  t.same(args, ['-s', '-H', 'X-Api-Key: k',
    'http://dify-plugin-daemon:5002/plugin/0b6e1c1e-0000-4000-8000-000000000001/management/models?page=1&page_size=100'],
  'curl gets the key header and the whole URL as one argument');
  const sc = spawnSync(program('shellcheck'), ['--shell=sh', '--severity=style', podScript], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  t.equal(sc.status, 0, sc.stdout);
});
