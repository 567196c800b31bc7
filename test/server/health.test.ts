// The plain-HTTP port: /healthz, /readyz transitions (certificate, PVC cache, shutdown) and /metrics
// with the documented names, counting what the admission port answered.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { contract } from '../../src/contract.js';
import { LATENCY_BUCKETS_SECONDS, METRIC_NAMES, createMetrics } from '../../src/metrics.js';
import { FakePvcCache, generateCerts, httpsRequest, postReview, startServer, tempDir } from './support.js';
import { loadReview } from '../../harness/fixtures.js';

async function get(port: number, path: string): Promise<{ status: number; contentType: string; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: await res.text() };
}

t.test('readiness: certificate loaded AND PVC cache synced AND not shutting down', async (t) => {
  const dir = tempDir(t);
  const pvcCache = new FakePvcCache();
  pvcCache.synced = false;
  pvcCache.hasSynced = false;
  const certFile = join(dir, 'tls.crt');
  const keyFile = join(dir, 'tls.key');
  const { server, healthPort } = await startServer(t, {
    pvcCache,
    tls: { certFile, keyFile, pollIntervalMs: 50, debounceMs: 20 },
  });

  const readyz = async () => {
    const res = await get(healthPort, '/readyz');
    const body = JSON.parse(res.body) as { status: string; checks: Record<string, boolean> };
    return { code: res.status, status: body.status, checks: body.checks };
  };
  t.equal((await get(healthPort, '/healthz')).status, 200, 'live from the start');
  t.match(
    await readyz(),
    { code: 503, status: 'not ready', checks: { certificate: false, pvcCache: false, shuttingDown: false } },
    'nothing loaded yet',
  );

  generateCerts(dir);
  await server.certificate!.reload();
  t.match(
    await readyz(),
    { code: 503, status: 'not ready', checks: { certificate: true, pvcCache: false, shuttingDown: false } },
    'certificate only',
  );

  pvcCache.synced = true;
  pvcCache.hasSynced = true;
  t.match(
    await readyz(),
    { code: 200, status: 'ready', checks: { certificate: true, pvcCache: true, shuttingDown: false } },
    'ready',
  );

  // A watch that breaks after the first sync keeps the replica ready: only password changes wait for it.
  pvcCache.synced = false;
  t.match(
    await readyz(),
    { code: 200, status: 'ready', checks: { pvcCache: true } },
    'a broken watch after the first sync keeps the replica ready',
  );
  pvcCache.synced = true;

  server.beginShutdown();
  t.match(
    await readyz(),
    { code: 503, status: 'not ready', checks: { certificate: true, pvcCache: true, shuttingDown: true } },
    'not ready once shutting down',
  );
  t.equal((await get(healthPort, '/healthz')).status, 200, 'still live while shutting down');
});

t.test('/metrics: the documented names, in seconds, counting answers', async (t) => {
  const certs = generateCerts(tempDir(t));
  const ca = readFileSync(certs.caFile);
  const metrics = createMetrics();
  const pvcCache = new FakePvcCache(['dify/data-dify-postgresql-0']);
  metrics.observeCache({ synced: true, ageSeconds: 42 });
  const { healthPort, port } = await startServer(t, {
    metrics,
    pvcCache,
    tls: { certFile: certs.certFile, keyFile: certs.keyFile },
  });

  await postReview(port, contract.webhook.mutatePodsPath, ca, loadReview('pod-api-literal'));
  await postReview(port, contract.webhook.mutatePodsPath, ca, loadReview('pod-web'));
  await postReview(port, contract.webhook.validateSecretsPath, ca, loadReview('secret-postgresql-update-password'));
  await httpsRequest({
    port,
    path: contract.webhook.validateSecretsPath,
    ca,
    body: '{',
    headers: { 'content-type': 'application/json' },
  });
  // A handler slowed down on purpose: its duration must land in seconds (>= 0.06), not milliseconds (>= 60).
  pvcCache.state = () => {
    const until = Date.now() + 60;
    while (Date.now() < until) {
      /* busy */
    }
    throw new Error('slow fault');
  };
  await postReview(port, contract.webhook.validateSecretsPath, ca, loadReview('secret-postgresql-update-password'));
  metrics.eventEmissionFailures.inc();

  const res = await get(healthPort, '/metrics');
  t.equal(res.status, 200);
  t.match(res.contentType, /^text\/plain; version=0\.0\.4/);
  for (const name of Object.values(METRIC_NAMES)) {
    t.match(res.body, new RegExp(`^# HELP ${name} \\S`, 'm'), `${name} is exposed with help`);
  }
  const value = (series: string): number => {
    const line = res.body.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? Number.NaN : Number(line.slice(series.length + 1));
  };
  const mutate = contract.webhook.mutatePodsPath;
  const validate = contract.webhook.validateSecretsPath;
  t.equal(value(`${METRIC_NAMES.requests}{route="${mutate}",decision="patched",code="200"}`), 1);
  t.equal(value(`${METRIC_NAMES.requests}{route="${mutate}",decision="allowed",code="200"}`), 1);
  t.equal(value(`${METRIC_NAMES.requests}{route="${validate}",decision="denied",code="200"}`), 1);
  t.equal(value(`${METRIC_NAMES.requests}{route="${validate}",decision="rejected",code="400"}`), 1);
  t.equal(value(`${METRIC_NAMES.requests}{route="${validate}",decision="error",code="500"}`), 1);
  t.equal(value(`${METRIC_NAMES.denials}{reason="PasswordChangeUnderPvc"}`), 1);
  t.equal(value(`${METRIC_NAMES.requestDuration}_count{route="${validate}"}`), 3);
  const sum = value(`${METRIC_NAMES.requestDuration}_sum{route="${validate}"}`);
  t.ok(sum >= 0.06 && sum < 60, `the duration sum ${sum} is in seconds`);
  for (const le of LATENCY_BUCKETS_SECONDS) {
    t.ok(res.body.includes(`${METRIC_NAMES.requestDuration}_bucket{le="${le}",route="${mutate}"}`), `bucket ${le} s`);
  }
  t.ok(
    LATENCY_BUCKETS_SECONDS[0]! <= 0.001 && LATENCY_BUCKETS_SECONDS.at(-1)! <= 30,
    'buckets from sub-millisecond to the webhook timeout',
  );
  t.equal(value(METRIC_NAMES.pvcCacheSynced), 1);
  t.equal(value(METRIC_NAMES.pvcCacheAge), 42);
  t.equal(value(METRIC_NAMES.eventEmissionFailures), 1);
  t.match(res.body, /^process_cpu_seconds_total /m, 'process metrics too');
});

t.test('two servers in one process do not share metrics', async (t) => {
  const a = createMetrics({ defaultMetrics: false });
  const b = createMetrics({ defaultMetrics: false });
  a.denials.inc({ reason: 'PasswordKeysDiverge' });
  t.match(await a.registry.metrics(), /secret_denials_total\{reason="PasswordKeysDiverge"\} 1/);
  t.notMatch(await b.registry.metrics(), /PasswordKeysDiverge/);
  t.equal(a.registry.getSingleMetric(METRIC_NAMES.pvcCacheSynced) !== undefined, true);
});
