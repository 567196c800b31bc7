// The bundled Redis, run for real (Debian's redis-server 7, as user redis, output on pipes) with the
// StatefulSet's rendered command and env (password from the rendered Secret): its probe passes, a
// client with a Dify component's REDIS_* settings or its CELERY_BROKER_URL authenticates, one without
// the password gets NOAUTH and one with another gets WRONGPASS.
import { rmSync } from 'node:fs';
import t, { type Test } from 'tap';
import { ENV, SECRET_KEYS, contract } from '../../src/contract.js';
import { run } from '../../harness/commands.js';
import { reservePort } from '../../harness/ports.js';
import { program } from '../../harness/programs/programs.js';
import type { Container } from '../../harness/helm.js';
import { componentContainer, mainContainerOf, named, releaseName, renderChart } from '../chart/support.js';
import { resolvedEnv, secretValue, shellScript, type Env } from '../../harness/programs/rendered-env.js';
import { RedisConnection } from '../../harness/programs/resp.js';
import { privateDir, runAs, startAs, systemUser, until } from '../../harness/programs/run.js';

const redisUser = systemUser('redis');
const PATH = `/usr/bin:/bin`;
program('redis-server');

const { objects } = await renderChart();
const statefulSet = named(objects, 'StatefulSet', 'redisMaster');
const container = mainContainerOf(statefulSet);
const component = (name: string): Container => componentContainer(objects, name);
const service = named(objects, 'Service', 'redisMaster');
const password = secretValue(objects, releaseName('redisSecret'), SECRET_KEYS.redisPassword);

const work = privateDir('dify-redis', redisUser);
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const port = await reservePort();
t.teardown(() => port.release());

// The container's env; only where it listens and writes changes (loopback, a free port, a temporary folder).
const env: Env = {
  ...resolvedEnv(objects, container),
  PATH,
  REDIS_LISTEN_PORT: String(port.port),
  REDIS_BIND_ADDRESSES: '127.0.0.1',
  REDIS_DATA_DIR: work,
};
const redis = startAs('redis-server', redisUser, '/bin/sh', ['-c', shellScript(container.command)], { env, cwd: work });
t.teardown(() => redis.stop());

const probe = shellScript((container.readinessProbe as { exec: { command: string[] } }).exec.command);

t.test('the rendered command and probe pass shellcheck (POSIX sh)', async (t) => {
  for (const script of [shellScript(container.command), probe]) {
    const r = await run(program('shellcheck'), ['--shell=sh', '--severity=style', '-'], { input: script });
    t.equal(r.status, 0, r.stdout);
  }
});

t.test('the rendered command starts Redis with requirepass from the Secret; the probe passes', async (t) => {
  t.equal(env[ENV.redisPassword], password, "REDIS_PASSWORD of the Redis container is the Secret's");
  t.equal(resolvedEnv(objects, container).REDIS_LISTEN_PORT, String(contract.redisPort));
  await until(redis, 'the probe', async () => (await runAs(redisUser, '/bin/sh', ['-c', probe], env)).status === 0);
  const noAuth = await runAs(redisUser, '/bin/sh', ['-c', probe], { ...env, REDISCLI_AUTH: '' });
  t.not(noAuth.status, 0, 'the probe without REDISCLI_AUTH fails: auth is really on');
  t.notOk(redis.log.includes(password), 'Redis does not print the password');
});

/** A connection to the running Redis for a setting that names the Service: checks host and port, then connects on loopback. */
async function connectFor(t: Test, host: string, servicePort: string): Promise<RedisConnection> {
  t.equal(host, releaseName('redisMaster'), 'the Redis Service');
  t.equal(Number(servicePort), (service.spec as { ports: { port: number }[] }).ports[0]!.port, 'the Service port');
  return RedisConnection.open('127.0.0.1', port.port);
}

t.test('REDIS_* settings of api, worker, beat, plugin daemon and the migration Job authenticate', async (t) => {
  for (const name of contract.podRules.injectCredentials) {
    const settings = resolvedEnv(objects, component(name));
    const conn = await connectFor(t, settings[ENV.redisHost]!, settings[ENV.redisPort]!);
    t.equal(await conn.command('AUTH', settings[ENV.redisPassword]!), 'OK', `${name}: AUTH`);
    t.equal(await conn.command('SELECT', settings.REDIS_DB ?? '0'), 'OK', `${name}: SELECT`);
    t.equal(await conn.command('PING'), 'PONG', name);
    conn.close();
  }
});

t.test('CELERY_BROKER_URL, with $(REDIS_PASSWORD) expanded as Kubernetes does, authenticates', async (t) => {
  for (const name of [contract.components.api, contract.components.worker, contract.components.beat]) {
    const c = component(name);
    t.match(
      c.env!.find((e) => e.name === ENV.celeryBrokerUrl)!.value,
      `$(${ENV.redisPassword})`,
      `${name}: no literal password`,
    );
    const url = new URL(resolvedEnv(objects, c)[ENV.celeryBrokerUrl]!);
    t.equal(url.protocol, 'redis:');
    const conn = await connectFor(t, url.hostname, url.port);
    t.equal(await conn.command('AUTH', decodeURIComponent(url.password)), 'OK', `${name}: the broker URL's password`);
    t.equal(await conn.command('SELECT', url.pathname.slice(1)), 'OK', `${name}: database ${url.pathname}`);
    t.equal(await conn.command('SET', 'celery-probe', '1'), 'OK');
    conn.close();
  }
});

t.test('without the password: NOAUTH; with another: WRONGPASS', async (t) => {
  const conn = await RedisConnection.open('127.0.0.1', port.port);
  t.match(await conn.command('PING'), /^-NOAUTH Authentication required/);
  t.match(await conn.command('GET', 'celery-probe'), /^-NOAUTH/);
  t.match(await conn.command('AUTH', `${password}x`), /^-WRONGPASS/);
  conn.close();
});

t.test('SIGTERM reaches redis-server itself (the script execs it), which shuts down cleanly', async (t) => {
  const code = await redis.stop();
  t.equal(code, 0, 'redis-server exited 0');
  t.match(redis.log, /ready to exit, bye bye/, 'its own shutdown, not a killed shell');
});
