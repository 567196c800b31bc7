// src/main.ts as a process (through the TypeScript loader tap uses, as test/controlplane does):
// bad settings stop it with exit code 2 and one line each; SIGTERM turns readiness off, keeps judging
// requests for the shutdown delay (closing each connection), lets an in-flight request finish,
// then refuses new connections and exits 0.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { SETTINGS } from '../../src/config.js';
import type { ReadinessChecks } from '../../src/http/health-plugin.js';
import { contract } from '../../src/contract.js';
import { repoRoot } from '../../harness/binaries.js';
import { loadReview } from '../../harness/fixtures.js';
import { reservePorts } from '../../harness/ports.js';
import { captureOutput } from '../../harness/secrets.js';
import { answerOf, connectResult, generateCerts, postReview, tempDir } from './support.js';
import { eventually } from '../../harness/commands.js';
import type { TeardownHost } from '../../harness/processes.js';

interface HealthBody {
  status: string;
  checks?: ReadinessChecks;
}

interface Run {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function runMain(t: TeardownHost, env: NodeJS.ProcessEnv): Run {
  // Only the variables given here: the calling shell's DIFY_GUARD_* must not change what is tested.
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.startsWith('DIFY_GUARD_') && key !== 'KUBECONFIG'),
  );
  const child = spawn(process.execPath, ['--import', '@tapjs/typescript/import', join(repoRoot, 'src/main.ts')], {
    cwd: repoRoot,
    env: { ...inherited, TS_NODE_TRANSPILE_ONLY: '1', TS_NODE_PROJECT: join(repoRoot, 'tsconfig.json'), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    out += chunk.toString('utf8');
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    err += chunk.toString('utf8');
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  // Kept for the end-of-suite password scan once both streams are drained.
  child.once('close', () => {
    captureOutput('dify-guard-main.stdout', out);
    captureOutput('dify-guard-main.stderr', err);
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, stdout: () => out, stderr: () => err, exit };
}

t.test('bad settings: exit code 2, one line per problem, nothing started', async (t) => {
  const run = runMain(t, {
    [SETTINGS.port.env]: 'abc',
    [SETTINGS.logLevel.env]: 'loud',
    [SETTINGS.eventsEnabled.env]: 'yes',
  });
  const { code } = await run.exit;
  t.equal(code, 2);
  t.same(run.stderr().trim().split('\n').sort(), [
    'dify-guard: DIFY_GUARD_EVENTS_ENABLED: must be true or false, got "yes"',
    'dify-guard: DIFY_GUARD_LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent, got "loud"',
    'dify-guard: DIFY_GUARD_PORT: must be an integer 1-65535, got "abc"',
  ]);
  t.equal(run.stdout(), '');
});

t.test('SIGTERM: readiness off, delay, in-flight request finishes, new connections refused, exit 0', async (t) => {
  const dir = tempDir(t);
  const certs = generateCerts(dir);
  const ca = readFileSync(certs.caFile);
  const [admissionPort, healthPort] = await reservePorts(2);
  t.teardown(() => {
    admissionPort!.release();
    healthPort!.release();
  });
  // An API server that is not there: the PVC cache never syncs, which must not hold up the shutdown.
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'current-context: none',
      'clusters: [{name: none, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]',
      'users: [{name: none, user: {token: none}}]',
      'contexts: [{name: none, context: {cluster: none, user: none}}]',
      '',
    ].join('\n'),
  );
  const run = runMain(t, {
    KUBECONFIG: kubeconfig,
    [SETTINGS.port.env]: String(admissionPort!.port),
    [SETTINGS.healthPort.env]: String(healthPort!.port),
    [SETTINGS.bindAddress.env]: '127.0.0.1',
    [SETTINGS.tlsCertFile.env]: certs.certFile,
    [SETTINGS.tlsKeyFile.env]: certs.keyFile,
    [SETTINGS.shutdownTimeoutSeconds.env]: '20',
    [SETTINGS.shutdownDelaySeconds.env]: '1',
    [SETTINGS.logLevel.env]: 'trace',
  });
  // /healthz answers { status }, /readyz { status, checks }: what each test reads is optional here.
  const health = async (path: string): Promise<{ status: number; body: HealthBody }> => {
    const res = await fetch(`http://127.0.0.1:${healthPort!.port}${path}`);
    return { status: res.status, body: (await res.json()) as HealthBody };
  };
  await eventually(
    'the health port',
    async () => {
      try {
        return (await health('/healthz')).status === 200;
      } catch {
        return false;
      }
    },
    60_000,
  );
  await eventually('the certificate', async () => (await health('/readyz')).body.checks?.certificate === true);
  t.match((await health('/readyz')).body, {
    status: 'not ready',
    checks: { certificate: true, pvcCache: false, shuttingDown: false },
  });

  // An in-flight request: headers and half of the body sent, the rest held back until after SIGTERM.
  const review = loadReview('pod-api-literal');
  const body = Buffer.from(JSON.stringify(review));
  let inFlight!: ReturnType<typeof request>;
  const responded = new Promise<{ status: number; connection: string | undefined; json: unknown }>(
    (resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          servername: 'localhost',
          port: admissionPort!.port,
          path: contract.webhook.mutatePodsPath,
          method: 'POST',
          ca,
          agent: false,
          headers: { 'content-type': 'application/json', 'content-length': body.length },
        },
        (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => {
            text += chunk.toString('utf8');
          });
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, json: JSON.parse(text) }),
          );
        },
      );
      req.on('error', reject);
      req.write(body.subarray(0, body.length / 2));
      inFlight = req;
    },
  );
  await eventually('the request to reach the server', () =>
    run.stdout().includes('"msg":"admission request received"'),
  );

  run.child.kill('SIGTERM');
  await eventually('readiness to go false', async () => (await health('/readyz')).body.checks?.shuttingDown === true);
  t.equal((await health('/readyz')).status, 503, '/readyz answers 503 while draining');
  // During the shutdown delay, requests are still judged, each answer closing its connection.
  const late = await postReview(admissionPort!.port, contract.webhook.mutatePodsPath, ca, loadReview('pod-web'));
  t.equal(late.status, 200, 'a request during the delay is answered');
  t.equal(late.headers.connection, 'close', 'and its connection closed');
  await eventually(
    'the admission port to close after the delay',
    async () => (await connectResult(admissionPort!.port)) === 'ECONNREFUSED',
  );
  t.equal(await connectResult(admissionPort!.port), 'ECONNREFUSED', 'the admission port takes no new connections');
  t.equal(run.child.exitCode, null, 'still running while a request is in flight');

  inFlight.end(body.subarray(body.length / 2));
  const res = await responded;
  t.equal(res.status, 200, 'the in-flight request is answered');
  t.equal(res.connection, 'close');
  t.equal(answerOf(res).uid, review.request.uid);
  t.equal(answerOf(res).patchType, 'JSONPatch');

  const { code, signal } = await run.exit;
  t.equal(code, 0, 'exit code 0');
  t.equal(signal, null);
  const lines = run
    .stdout()
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { msg: string });
  const messages = lines.map((line) => line.msg);
  const shuttingDown = messages.indexOf('shutting down: not ready any more, finishing in-flight requests');
  t.ok(shuttingDown >= 0 && shuttingDown < messages.indexOf('dify-guard stopped'), 'logged in order');
  t.equal(run.stderr().replace(/.*ExperimentalWarning.*\n?/g, ''), '', 'nothing on stderr');
});
