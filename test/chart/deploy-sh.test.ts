// chart/deploy.sh, the guide's interface: required env, flags, --dry-run (the helm command with the
// secrets masked), the guide's PVC warning, and secrets handed to helm through private files rather
// than its command line. Stub helm/kubectl scripts record what they receive; shellcheck must pass.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { binary } from '../../harness/binaries.js';
import type { CommandResult } from '../../harness/commands.js';
import { chartDir, testSecret } from '../../harness/helm.js';
import { captureOutput } from '../../harness/secrets.js';
import { program } from '../../harness/programs/programs.js';
import { readBackScript } from './support.js';

const script = join(chartDir, 'deploy.sh');
const dir = mkdtempSync(join(tmpdir(), 'dify-deploy-test-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

// helm stub: records its arguments (one per line) and, for every --set-file, the file's mode and content.
const helmStub = join(dir, 'helm');
const helmLog = join(dir, 'helm.log');
writeFileSync(
  helmStub,
  `#!/usr/bin/env bash
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
# STUB_HELM_WAIT=1: run until deploy.sh has reported progress once (the kubectl stub's marker), then exit STUB_HELM_EXIT.
if [ "\${STUB_HELM_WAIT:-}" = 1 ]; then
  for _ in $(seq 300); do [ -e "${helmLog}.progress" ] && break; sleep 0.1; done
fi
exit "\${STUB_HELM_EXIT:-0}"
`,
);
chmodSync(helmStub, 0o755);

// kubectl stub: a cluster where the PVC exists (STUB_PVC=1) and the Secrets hold STUB_* values (a Secret exists when its
// value is set; STUB_PG_SECRET=1: the PostgreSQL Secret exists without a readable password); STUB_DOWN=1: unreachable;
// STUB_FORBIDDEN=1: Secrets cannot be read. During helm: the hook Job and its pod, one Deployment not ready.
const kubectlStub = join(dir, 'kubectl');
writeFileSync(
  kubectlStub,
  `#!/usr/bin/env bash
[ "\${STUB_DOWN:-}" = 1 ] && { echo 'The connection to the server was refused' >&2; exit 1; }
case "$*" in
  *"get secret"*) [ "\${STUB_FORBIDDEN:-}" = 1 ] && { echo 'Error from server (Forbidden)' >&2; exit 1; } ;;
esac
case "$*" in
  *"get pvc"*) [ "\${STUB_PVC:-}" = 1 ] && echo "persistentvolumeclaim/$5" ;;
  *"get secret"*"-o name"*)
    case "$5" in
      *-postgresql) [ -n "\${STUB_PG:-}\${STUB_PG_SECRET:-}" ] && echo "secret/$5" ;;
      *-app-secrets) [ -n "\${STUB_KEY:-}" ] && echo "secret/$5" ;;
      *-redis) [ -n "\${STUB_REDIS:-}" ] && echo "secret/$5" ;;
    esac ;;
  *"get job"*) printf 'active=1 succeeded= failed='; touch "${helmLog}.progress" ;;
  *"get pods"*) printf 'dify-db-migration-x1=Pending ' ;;
  *"get deploy"*) printf 'dify-api 0/1\ndify-web 1/1\n' ;;
  *"{.data.${SECRET_KEYS.postgresPassword}}"*) [ -n "\${STUB_PG:-}" ] && printf '%s' "$STUB_PG" | base64 -w0 ;;
  *"{.data.secret-key}"*) [ -n "\${STUB_KEY:-}" ] && printf '%s' "$STUB_KEY" | base64 -w0 ;;
  *"{.data.${SECRET_KEYS.redisPassword}}"*) [ -n "\${STUB_REDIS:-}" ] && printf '%s' "$STUB_REDIS" | base64 -w0 ;;
esac
exit 0
`,
);
chmodSync(kubectlStub, 0o755);

interface Env {
  [key: string]: string | undefined;
}
interface Stubs {
  helm: string;
  kubectl: string;
}
// deploy.sh with `stubs` as its helm and kubectl; its stdout and stderr are captured as `<capture>.stdout`/`.stderr`.
// stdin ignored: the script may exit before a writer to its stdin would finish (EPIPE).
function runDeploySh(args: string[], stubs: Stubs, env: Env, capture: string): CommandResult {
  const r = spawnSync('bash', [script, ...args], {
    env: { PATH: process.env.PATH, HOME: dir, TMPDIR: dir, HELM: stubs.helm, KUBECTL: stubs.kubectl, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.error) throw r.error;
  captureOutput(`${capture}.stdout`, r.stdout);
  captureOutput(`${capture}.stderr`, r.stderr);
  return { command: `deploy.sh ${args.join(' ')}`, status: r.status, stdout: r.stdout, stderr: r.stderr };
}
function deploy(args: string[], env: Env = {}): CommandResult {
  rmSync(`${helmLog}.args`, { force: true });
  rmSync(`${helmLog}.progress`, { force: true });
  return runDeploySh(args, { helm: helmStub, kubectl: kubectlStub }, env, 'deploy.sh');
}
const helmCalled = (): boolean => existsSync(`${helmLog}.args`);
const secrets = (): { POSTGRES_PASSWORD: string; DIFY_SECRET_KEY: string } => ({
  POSTGRES_PASSWORD: testSecret(),
  DIFY_SECRET_KEY: testSecret(),
});

t.test('shellcheck is clean (scripts/dev/prerequisites.sh provides shellcheck)', async (t) => {
  const r = spawnSync(program('shellcheck'), ['--shell=bash', '--severity=style', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
  });
  if (r.error) {
    t.fail(`shellcheck could not run (${r.error.message}): run scripts/dev/prerequisites.sh`);
    return;
  }
  t.equal(r.status, 0, r.stdout);
});

t.test("--help lists the guide's options and variables", async (t) => {
  const r = deploy(['--help']);
  t.equal(r.status, 0);
  for (const word of [
    '--image-tag',
    '--openai-api-key',
    '--namespace',
    '--release',
    '--values',
    '--set',
    '--set-string',
    '--set-file',
    '--dry-run',
    '--password-matches-volume',
    'POSTGRES_PASSWORD',
    'DIFY_SECRET_KEY',
    'REDIS_PASSWORD',
    'DEPLOY_PROGRESS_INTERVAL',
  ]) {
    t.match(r.stdout, word);
  }
  t.match(
    r.stdout,
    `-o jsonpath='{.data.${contract.appSecretKeys.secretKey}}'`,
    'how to read SECRET_KEY back on later runs',
  );
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
  const r = deploy(
    [
      '--dry-run',
      '--image-tag',
      '1.11.4',
      '--openai-api-key',
      openai,
      '--set',
      `secrets.sandboxApiKey=${testSecret()}`,
      '--set',
      'ingress.host=dify.example.com',
    ],
    env,
  );
  t.equal(r.status, 0, r.stderr);
  const line = r.stdout.trim();
  t.equal(line.split('\n').length, 1, 'one command line on stdout');
  t.match(
    line,
    new RegExp(`^${helmStub} upgrade --install dify ${chartDir} --namespace dify --create-namespace --timeout 20m `),
  );
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
  const r = deploy(['--dry-run', '-n', 'team-a', '-r', 'acme'], { ...secrets(), STUB_PVC: '1', STUB_PG_SECRET: '1' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, new RegExp(`upgrade --install acme ${chartDir} --namespace team-a --create-namespace`));
  t.match(r.stderr, expandName(contract.names.postgresqlPvc, 'acme'), "deploy.sh's PVC name is the contract's");
});

const pvcOf = (release: string): string => expandName(contract.names.postgresqlPvc, release);
const pgSecretOf = (release: string): string => expandName(contract.names.postgresqlSecret, release);
// The whole way out, in order: read the kept password back, or stop PostgreSQL, delete the PVC, wait, new password, deploy.
function assertWaysOut(t: Test, stderr: string): void {
  const steps = [
    `export POSTGRES_PASSWORD="$(kubectl get secret -n dify ${pgSecretOf('dify')} ` +
      `-o jsonpath='{.data.${SECRET_KEYS.postgresPassword}}' | base64 -d)"`,
    `kubectl scale statefulset -n dify ${expandName(contract.names.postgresql, 'dify')} --replicas=0`,
    `kubectl delete pvc -n dify ${pvcOf('dify')}`,
    `kubectl wait --for=delete pvc/${pvcOf('dify')} -n dify`,
    "export POSTGRES_PASSWORD='new-password'",
    './deploy.sh',
  ];
  let from = 0;
  const missing = steps.filter((step) => {
    const i = stderr.indexOf(step, from);
    if (i >= 0) from = i + step.length;
    return i < 0;
  });
  t.same(missing, [], 'every step of the way out is printed, in the order they must be run');
  t.match(stderr, /データはすべて失われます/);
}

t.test('PVC and Secret hold the same password: no warning (compared without printing either)', async (t) => {
  const env = secrets();
  const r = deploy(['--dry-run'], { ...env, STUB_PVC: '1', STUB_PG: env.POSTGRES_PASSWORD });
  t.equal(r.status, 0, r.stderr);
  t.notMatch(r.stderr, /警告/);
  t.notMatch(r.stderr, pvcOf('dify'), 'nothing about the PVC');
  t.notOk(r.stderr.includes(env.POSTGRES_PASSWORD));
});

t.test('PVC present, Secret unreadable or without the password: the warning with the whole way out', async (t) => {
  for (const stub of [{ STUB_FORBIDDEN: '1' }, { STUB_PG_SECRET: '1' }]) {
    const r = deploy(['--dry-run'], { ...secrets(), STUB_PVC: '1', ...stub });
    t.equal(r.status, 0, r.stderr);
    t.match(
      r.stderr,
      `警告: PVC ${pvcOf('dify')} (namespace dify) が既に存在しますが、Secret ${pgSecretOf('dify')} を読めないため`,
    );
    t.match(r.stderr, /28P01/);
    assertWaysOut(t, r.stderr);
  }
});

t.test(
  'a POSTGRES_PASSWORD that differs from the kept Secret under the PVC is refused up front, with the whole way out',
  async (t) => {
    const env = secrets();
    const old = testSecret();
    const r = deploy([], { ...env, STUB_PVC: '1', STUB_PG: old });
    t.equal(r.status, 1);
    t.match(r.stderr, `POSTGRES_PASSWORD が Secret ${pgSecretOf('dify')} の現在のパスワードと一致しません`);
    assertWaysOut(t, r.stderr);
    t.notOk(r.stderr.includes(old) || r.stderr.includes(env.POSTGRES_PASSWORD), 'neither password shown');
    t.notOk(helmCalled());
  },
);

// Runs the `export <variable>="$(kubectl ...)"` line deploy.sh printed with bash, against the kubectl stub holding
// `stub` (its STUB_* values), and says whether it reads back `expected`.
function readsBack(stderr: string, variable: string, expected: string, stub: Env): boolean {
  const script = readBackScript(stderr, variable);
  if (!script) return false;
  const run = spawnSync('bash', ['-c', script], {
    env: { PATH: `${dir}:${process.env.PATH}`, ...stub, EXPECTED: expected },
    stdio: 'ignore',
  });
  return run.status === 0;
}

t.test('the printed read-back command returns the kept password (run by bash against the kubectl stub)', async (t) => {
  const env = secrets();
  const old = testSecret();
  const r = deploy([], { ...env, STUB_PVC: '1', STUB_PG: old });
  t.ok(
    readsBack(r.stderr, 'POSTGRES_PASSWORD', old, { STUB_PG: old }),
    "the command reads the Secret's postgres-password back exactly",
  );
});

t.test(
  "PVC present but its Secret deleted: refused unless --password-matches-volume states the password is the volume's",
  async (t) => {
    const env = secrets();
    const refused = deploy([], { ...env, STUB_PVC: '1' });
    t.equal(refused.status, 1);
    t.match(
      refused.stderr,
      `PVC ${pvcOf('dify')} (namespace dify) があるのに、そのパスワードを記録した Secret ${pgSecretOf('dify')} がありません`,
    );
    t.match(refused.stderr, /確かめる手段がありません/);
    t.match(refused.stderr, '--password-matches-volume を付けて再実行してください');
    t.notOk(helmCalled(), 'helm not run');
    const stated = deploy(['--password-matches-volume'], { ...env, STUB_PVC: '1' });
    t.equal(stated.status, 0, stated.stderr);
    t.match(stated.stderr, /--password-matches-volume の指定により/);
    t.ok(helmCalled(), 'helm run once the operator states it');
    t.notOk(`${refused.stderr}${stated.stderr}`.includes(env.POSTGRES_PASSWORD), 'the password is not shown');
  },
);

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

t.test(
  'a real run: helm gets the secrets through 0600 files that are gone afterwards, never in its arguments',
  async (t) => {
    const env = { ...secrets(), REDIS_PASSWORD: testSecret() };
    const openai = `sk-${testSecret()}`;
    const values = join(dir, 'site.yaml');
    writeFileSync(values, 'ingress:\n  host: dify.example.com\n');
    const r = deploy(['--image-tag', '1.11.4', '-f', values], { ...env, OPENAI_API_KEY: openai });
    t.equal(r.status, 0, r.stderr);
    const args = readFileSync(`${helmLog}.args`, 'utf8');
    for (const value of [env.POSTGRES_PASSWORD, env.DIFY_SECRET_KEY, env.REDIS_PASSWORD, openai])
      t.notOk(args.includes(value), "not in helm's argv");
    t.match(args, /^upgrade\n--install\ndify\n/);
    t.match(args, '--create-namespace');
    t.match(args, `--values\n${values}`);
    t.notMatch(args, 'pluginDaemon.redis.authEnabled', "Redis auth is the chart's default, not a flag of deploy.sh");
    const files = readFileSync(`${helmLog}.files`, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' '));
    const expected: Record<string, string> = {
      'postgresql.auth.password': env.POSTGRES_PASSWORD,
      'secrets.difySecretKey': env.DIFY_SECRET_KEY,
      'pluginDaemon.redis.password': env.REDIS_PASSWORD,
      'secrets.openaiApiKey': openai,
    };
    t.same(files.map(([key]) => key).sort(), Object.keys(expected).sort());
    for (const [key, mode, path] of files) {
      t.equal(mode, '600', `${key}: private file`);
      t.ok(readFileSync(`${helmLog}.content.${key}`, 'utf8') === expected[key!], `${key}: exact value, no newline`);
      t.notOk(existsSync(path!), `${key}: removed when deploy.sh exits`);
    }
    t.notOk(r.stderr.includes(env.POSTGRES_PASSWORD));
  },
);

t.test(
  'REDIS_PASSWORD: optional (the chart generates one), URL-safe, and a change is warned about with the restart command',
  async (t) => {
    const without = deploy(['--dry-run'], secrets());
    t.equal(without.status, 0, without.stderr);
    t.notMatch(
      without.stdout,
      'pluginDaemon.redis',
      'no Redis value without REDIS_PASSWORD: the chart generates and keeps one',
    );
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
  },
);

// chart/README.md, 28P01 step 5: the command as written, run by bash with kubectl and curl stubbed, hands curl
// the whole URL (an unquoted `&` would split it in the pod's sh); the pod's script passes shellcheck.
t.test(
  "chart/README.md 28P01 step 5: the URL with & reaches curl whole, and the pod's sh -c script is shellcheck-clean",
  async (t) => {
    const readme = readFileSync(join(chartDir, 'README.md'), 'utf8');
    const block = /```bash\n((?:(?!```)[\s\S])*management\/models(?:(?!```)[\s\S])*)```/.exec(readme)?.[1];
    if (!block) {
      t.fail('step 5 command block not found in chart/README.md');
      return;
    }
    const commands = block
      .split('\n')
      .map((l) => l.trim())
      .join('\n');
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
    t.same(
      args,
      [
        '-s',
        '-H',
        'X-Api-Key: k',
        'http://dify-plugin-daemon:5002/plugin/0b6e1c1e-0000-4000-8000-000000000001/management/models?page=1&page_size=100',
      ],
      'curl gets the key header and the whole URL as one argument',
    );
    const sc = spawnSync(program('shellcheck'), ['--shell=sh', '--severity=style', podScript], {
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
    });
    t.equal(sc.status, 0, sc.stdout);
  },
);

// The keys deploy.sh passes itself, and the variable the refusal must name.
const MANAGED: Array<[string, string]> = [
  ['postgresql.auth.password', 'POSTGRES_PASSWORD'],
  ['secrets.difySecretKey', 'DIFY_SECRET_KEY'],
  ['pluginDaemon.redis.password', 'REDIS_PASSWORD'],
  ['secrets.openaiApiKey', 'OPENAI_API_KEY'],
];

t.test(
  '--set / --set-string / --set-file on a key deploy.sh manages is refused, naming the key and the variable',
  async (t) => {
    const file = join(dir, 'value.txt');
    writeFileSync(file, testSecret());
    for (const [key, variable] of MANAGED) {
      const value = testSecret();
      for (const [flag, arg] of [
        ['--set', `${key}=${value}`],
        ['--set-string', `${key}=${value}`],
        ['--set-file', `${key}=${file}`],
        ['--set', `ingress.host=x,${key}=${value}`],
      ] as const) {
        const r = deploy([flag, arg], secrets());
        t.equal(r.status, 2, `${flag} ${key}`);
        t.match(r.stderr, `${flag} で ${key} は指定できません。この値は deploy.sh が環境変数 ${variable} から渡します`);
        t.notOk(r.stderr.includes(value), 'the value is not shown');
      }
    }
    t.notOk(helmCalled());
    const other = deploy(
      ['--dry-run', '--set-file', `ingress.tls.crt=${file}`, '--set', 'postgresql.auth.username=dify'],
      secrets(),
    );
    t.equal(other.status, 0, `other keys pass through: ${other.stderr}`);
    t.match(other.stdout, `--set-file ingress.tls.crt=${file}`, 'a file path is not a secret: shown');
  },
);

t.test('-f values naming a managed key (block or flow style) is refused; other nested keys pass', async (t) => {
  const value = testSecret();
  const block = join(dir, 'block.yaml');
  writeFileSync(
    block,
    [
      '# site values',
      'postgresql:',
      '  primary:',
      '    resources: {}',
      '  auth:',
      '    # kept here by mistake',
      `    password: ${value}`,
      'ingress:',
      '  host: x',
      '',
    ].join('\n'),
  );
  const r = deploy(['-f', block], secrets());
  t.equal(r.status, 2);
  t.match(
    r.stderr,
    `values ファイル ${block} で postgresql.auth.password は指定できません。この値は deploy.sh が環境変数 POSTGRES_PASSWORD から渡します`,
  );
  const flow = join(dir, 'flow.yaml');
  writeFileSync(flow, `secrets: {difySecretKey: ${value}}\n`);
  const f = deploy(['--values', flow], secrets());
  t.equal(f.status, 2);
  t.match(f.stderr, /DIFY_SECRET_KEY/);
  const json = join(dir, 'values.json');
  writeFileSync(json, JSON.stringify({ pluginDaemon: { redis: { password: value } } }));
  const j = deploy(['-f', json], secrets());
  t.equal(j.status, 2, 'a JSON values file (YAML flow style) is read too');
  t.match(j.stderr, /REDIS_PASSWORD/);
  const quoted = join(dir, 'quoted.yaml');
  writeFileSync(quoted, `"secrets":\n  'openaiApiKey': ${value}\n`);
  const q = deploy(['-f', quoted], secrets());
  t.equal(q.status, 2);
  t.match(
    q.stderr,
    `values ファイル ${quoted} で secrets.openaiApiKey は指定できません。この値は deploy.sh が環境変数 OPENAI_API_KEY から渡します`,
  );
  t.notOk(`${r.stderr}${f.stderr}${j.stderr}${q.stderr}`.includes(value), 'the value is not shown');
  const ok = join(dir, 'ok.yaml');
  writeFileSync(
    ok,
    [
      'postgresql:',
      '  auth:',
      '    username: dify',
      'pluginDaemon:',
      '  redis:',
      '    existingSecret: mine',
      'webhook:',
      '  password: {}',
      '',
    ].join('\n'),
  );
  const passed = deploy(['--dry-run', '-f', ok], secrets());
  t.equal(passed.status, 0, passed.stderr);
  t.notOk(helmCalled());
});

t.test(
  'DIFY_SECRET_KEY missing: read it back on an existing install, generate it only on a first install',
  async (t) => {
    const pg = { POSTGRES_PASSWORD: testSecret() };
    const key = testSecret();
    const appSecret = expandName(contract.names.appSecrets, 'dify');
    const readBack =
      `export DIFY_SECRET_KEY="$(kubectl get secret -n dify ${appSecret} ` +
      `-o jsonpath='{.data.${contract.appSecretKeys.secretKey}}' | base64 -d)"`;
    const existing = deploy([], { ...pg, STUB_KEY: key });
    t.equal(existing.status, 1);
    t.match(existing.stderr, `既存のインストールです (Secret ${appSecret} があります)`);
    t.match(existing.stderr, readBack);
    t.notMatch(existing.stderr, 'openssl rand', 'never told to generate a new one');
    t.notOk(existing.stderr.includes(key));
    t.ok(
      readsBack(existing.stderr, 'DIFY_SECRET_KEY', key, { STUB_KEY: key }),
      'the printed command reads the current SECRET_KEY back exactly',
    );
    const first = deploy([], pg);
    t.equal(first.status, 1);
    t.match(first.stderr, /初回インストールなので/);
    t.match(first.stderr, 'export DIFY_SECRET_KEY=$(openssl rand -hex 32)');
    const unknown = deploy([], { ...pg, STUB_DOWN: '1' });
    t.equal(unknown.status, 1);
    t.match(unknown.stderr, readBack);
    t.match(unknown.stderr, /初回インストールの場合に限り/);
    t.ok(unknown.stderr.indexOf(readBack) < unknown.stderr.indexOf('openssl rand'), 'reading back comes first');
    t.notOk(helmCalled());
  },
);

t.test(
  'while helm runs: what it waits for and for how long, progress lines, and the next commands when it fails',
  async (t) => {
    const env = { ...secrets(), DEPLOY_PROGRESS_INTERVAL: '1', STUB_HELM_WAIT: '1' };
    const job = expandName(contract.names.migrationJob, 'dify');
    const ok = deploy(['--timeout', '7m'], env);
    t.equal(ok.status, 0, ok.stderr);
    t.match(
      ok.stderr,
      `helm は post-install / post-upgrade hook の migration Job ${job} の完了を最大 7m 待ちます (--timeout 7m)`,
    );
    t.match(ok.stderr, 'Deployment のロールアウト');
    t.ok(ok.stderr.indexOf('最大 7m 待ちます') < ok.stderr.indexOf('待機中'), 'said before the first progress line');
    t.match(
      ok.stderr,
      new RegExp(
        `待機中 \\(\\d+ 秒経過 / 最大 7m\\): Job ${job}: active=1 succeeded=0 failed=0 Pod: ${job}-x1=Pending`,
      ),
    );
    t.match(ok.stderr, '準備ができていない Deployment: dify-api(0/1)');
    t.notMatch(ok.stderr, 'dify-web(', 'ready Deployments are not listed');
    t.match(ok.stderr, /helm が完了しました/);
    const failed = deploy([], { ...env, STUB_HELM_EXIT: '1' });
    t.equal(failed.status, 1, "helm's exit code");
    t.match(failed.stderr, 'エラー: helm が失敗しました (終了コード 1)');
    for (const command of [
      `kubectl logs -n dify job/${job}`,
      `kubectl describe job -n dify ${job}`,
      `kubectl describe pods -n dify -l job-name=${job}`,
    ]) {
      t.match(failed.stderr, command);
    }
    t.notOk(`${ok.stderr}${failed.stderr}`.includes(env.POSTGRES_PASSWORD));
  },
);

// --rotate-postgres-password against stubs: kubectl keeps the database's password and the Secret's in files, answers
// `exec -i ... sh -c 'read PGPASSWORD; psql -h ...'` (a TCP login: 28P01 when it differs) and `exec -i ... psql` (ALTER ROLE
// read from stdin); helm stores the values file's password into the Secret, or fails once when ROT_HELM_FAIL_ONCE names a file
// that exists. Both record every argv, one call a line, so no password may appear in any of them.
const rot = join(dir, 'rot');
const rotKubectl = join(dir, 'rot-kubectl');
const rotHelm = join(dir, 'rot-helm');
writeFileSync(
  rotKubectl,
  `#!/usr/bin/env bash
printf '%s\\n' "kubectl $*" >> "${rot}.argv"
case "$*" in
  *"get pvc"*) [ "\${ROT_PVC:-1}" = 1 ] && echo "persistentvolumeclaim/$5" ;;
  *"get pod"*) printf '%s' "\${ROT_READY:-True}" ;;
  *"{.data.${SECRET_KEYS.postgresPassword}}"*) base64 -w0 < "${rot}.secret" ;;
  *"{.data.${SECRET_KEYS.postgresUsername}}"*|*"{.data.${SECRET_KEYS.postgresDatabase}}"*) printf dify | base64 -w0 ;;
  *"exec -i"*"sh -c"*) IFS= read -r pw; [ "$pw" = "$(cat "${rot}.db")" ] && { echo 1; exit 0; }
    echo 'psql: error: FATAL:  password authentication failed for user "dify"' >&2; exit 2 ;;
  *"exec -i"*psql*) sql=$(cat); pw=\${sql#*PASSWORD \\'}; pw=\${pw%%\\';*}; printf '%s' "$pw" > "${rot}.db" ;;
  *"rollout restart"*) echo restarted ;;
  *"rollout status"*) echo 'successfully rolled out' ;;
esac
exit 0
`,
);
writeFileSync(
  rotHelm,
  `#!/usr/bin/env bash
printf '%s\\n' "helm $*" >> "${rot}.argv"
prev=
for a in "$@"; do
  if [ "$prev" = --values ]; then stat -c %a "$a" > "${rot}.values-mode"; cp "$a" "${rot}.values"; fi
  prev=$a
done
if [ -n "\${ROT_HELM_FAIL_ONCE:-}" ] && [ -e "$ROT_HELM_FAIL_ONCE" ]; then
  rm -f "$ROT_HELM_FAIL_ONCE"; echo 'Error: UPGRADE FAILED' >&2; exit 1
fi
sed -n 's/^ *password: "\\(.*\\)"$/\\1/p' "${rot}.values" | tr -d '\\n' > "${rot}.secret"
exit 0
`,
);
chmodSync(rotKubectl, 0o755);
chmodSync(rotHelm, 0o755);

interface RotState {
  db: string;
  secret: string;
  argv: string;
}
function rotate(
  args: string[],
  state: { db: string; secret: string },
  env: Env = {},
): CommandResult & { after: RotState } {
  for (const f of ['argv', 'values', 'values-mode']) rmSync(`${rot}.${f}`, { force: true });
  writeFileSync(`${rot}.db`, state.db);
  writeFileSync(`${rot}.secret`, state.secret);
  const r = runDeploySh(
    ['--rotate-postgres-password', ...args],
    { helm: rotHelm, kubectl: rotKubectl },
    env,
    'deploy.sh-rotate',
  );
  const read = (f: string): string => (existsSync(`${rot}.${f}`) ? readFileSync(`${rot}.${f}`, 'utf8') : '');
  const after = { db: read('db'), secret: read('secret'), argv: read('argv') };
  captureOutput('deploy.sh-rotate.argv', after.argv);
  return { ...r, after };
}

t.test(
  '--rotate-postgres-password: --help describes it; other options are refused (exit 2), nothing run',
  async (t) => {
    t.match(deploy(['--help']).stdout, /--rotate-postgres-password[\s\S]*ALTER ROLE[\s\S]*再実行/);
    const old = testSecret();
    for (const extra of [['--image-tag', '1.11.4'], ['--set', 'a=b'], ['--dry-run'], ['-f', script]]) {
      const r = rotate(extra, { db: old, secret: old }, { POSTGRES_PASSWORD: testSecret() });
      t.equal(r.status, 2, extra.join(' '));
      t.match(r.stderr, `--rotate-postgres-password と ${extra[0]} は一緒に使えません`);
      t.equal(r.after.argv, '', 'no kubectl or helm call');
    }
    const unset = rotate([], { db: old, secret: old });
    t.equal(unset.status, 1);
    t.match(unset.stderr, 'POSTGRES_PASSWORD が設定されていません');
    const differs = deploy(['-n', 'ns2'], { ...secrets(), STUB_PVC: '1', STUB_PG: old });
    t.equal(differs.status, 1, 'a plain deploy.sh with another password is still refused');
    t.match(
      differs.stderr,
      /\(2\) データを残したままパスワードを変える[\s\S]*\.\/deploy\.sh --rotate-postgres-password -n ns2 -r dify/,
      'and its ways out name the rotation',
    );
  },
);

t.test(
  '--rotate-postgres-password refuses up front (no PVC, pod not Ready, unsafe password), changing nothing',
  async (t) => {
    const old = testSecret();
    for (const [env, pattern] of [
      [
        { ROT_PVC: '0', POSTGRES_PASSWORD: testSecret() },
        /PVC data-dify-postgresql-0 .*がありません。データが無いのでローテーションは不要です/,
      ],
      [{ ROT_READY: 'False', POSTGRES_PASSWORD: testSecret() }, /dify-postgresql-0 が Ready ではありません/],
      [{ POSTGRES_PASSWORD: `${testSecret()} x` }, /空白・引用符・バックスラッシュは使えません/],
      [{ POSTGRES_PASSWORD: `${testSecret()}'x` }, /空白・引用符・バックスラッシュは使えません/],
    ] as const) {
      const r = rotate([], { db: old, secret: old }, env);
      t.equal(r.status, 1, r.stderr);
      t.match(r.stderr, pattern);
      t.match(r.stderr, 'パスワードは変更していません');
      t.same([r.after.db, r.after.secret], [old, old], 'database and Secret unchanged');
      t.notMatch(r.after.argv, /^helm /m, 'helm not called');
    }
  },
);

t.test('--rotate-postgres-password: database, release, restarts, checks; no password in any argv', async (t) => {
  const old = testSecret();
  const next = testSecret();
  const r = rotate(['-n', 'ns1', '-r', 'rel1'], { db: old, secret: old }, { POSTGRES_PASSWORD: next });
  t.equal(r.status, 0, r.stderr);
  t.same([r.after.db, r.after.secret], [next, next], 'the database and the Secret hold the new password');
  for (const n of [1, 2, 3, 4, 5]) t.match(r.stderr, `== ${n}/5 `);
  t.match(r.stderr, '古いパスワード: 拒否されます (28P01)');
  t.match(r.stderr, '完了: PostgreSQL のパスワードを変更しました');
  t.notOk(r.after.argv.includes(old) || r.after.argv.includes(next), 'neither password in any kubectl/helm argv');
  t.notOk(r.stderr.includes(old) || r.stderr.includes(next), 'nor in the output');
  t.match(r.after.argv, /^helm upgrade rel1 \S+ --namespace ns1 --reuse-values --values \S+ --timeout 20m$/m);
  t.equal(readFileSync(`${rot}.values-mode`, 'utf8').trim(), '600', 'the values file is private');
  t.match(readFileSync(`${rot}.values`, 'utf8'), 'rotatedInDatabase: true');
  t.match(
    r.after.argv,
    /kubectl rollout restart -n ns1 deploy\/rel1-api deploy\/rel1-worker deploy\/rel1-beat deploy\/rel1-plugin-daemon/,
  );
  t.match(r.after.argv, /kubectl exec -i -n ns1 rel1-postgresql-0 -c postgresql .* -- psql /);
  t.ok(r.after.argv.indexOf('exec -i') < r.after.argv.indexOf('helm upgrade'), 'the database first, then the release');
  t.ok(r.after.argv.indexOf('helm upgrade') < r.after.argv.indexOf('rollout restart'), 'then the restarts');
});

t.test('--rotate-postgres-password: helm fails once, the database is put back; the re-run finishes', async (t) => {
  const old = testSecret();
  const next = testSecret();
  const once = join(dir, 'fail-once');
  writeFileSync(once, '');
  const failed = rotate([], { db: old, secret: old }, { POSTGRES_PASSWORD: next, ROT_HELM_FAIL_ONCE: once });
  t.equal(failed.status, 1);
  t.match(
    failed.stderr,
    'helm が失敗しました (終了コード 1)。データベースのパスワードを元に戻しました: 古いパスワードのまま使えます',
  );
  t.same([failed.after.db, failed.after.secret], [old, old], 'the old password works again');
  t.notMatch(failed.after.argv, /rollout restart/);
  const rerun = rotate([], failed.after, { POSTGRES_PASSWORD: next });
  t.equal(rerun.status, 0, rerun.stderr);
  t.same([rerun.after.db, rerun.after.secret], [next, next]);
});

t.test('--rotate-postgres-password re-run: from the state left by an interrupted run', async (t) => {
  const old = testSecret();
  const next = testSecret();
  const dbDone = rotate([], { db: next, secret: old }, { POSTGRES_PASSWORD: next });
  t.equal(dbDone.status, 0, dbDone.stderr);
  t.match(dbDone.stderr, 'データベースは既に新しいパスワードです (前回の実行で変更済み)。Secret の更新から続けます。');
  t.notMatch(dbDone.after.argv, /-- psql -U/, 'no second ALTER ROLE');
  t.same([dbDone.after.db, dbDone.after.secret], [next, next]);
  const secretDone = rotate([], { db: next, secret: next }, { POSTGRES_PASSWORD: next });
  t.equal(secretDone.status, 0, secretDone.stderr);
  t.match(secretDone.stderr, '前回の実行で Secret まで更新済みとみなし、再起動と確認を行います');
  t.notMatch(secretDone.after.argv, /^helm /m, 'no helm upgrade');
  t.match(secretDone.after.argv, /rollout restart/);
  const neither = rotate([], { db: testSecret(), secret: old }, { POSTGRES_PASSWORD: next });
  t.equal(neither.status, 1);
  t.match(neither.stderr, 'Secret dify-postgresql のパスワードも POSTGRES_PASSWORD も受け付けません (28P01)');
  t.notMatch(neither.after.argv, /^helm /m);
});
