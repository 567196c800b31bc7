// Certificate reload without restart: a new handshake sees the new certificate, an open keep-alive
// connection keeps working, a broken pair keeps the old one, and Kubernetes' `..data` symlink swap
// is noticed.
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { join } from 'node:path';
import { contract } from '../../src/contract.js';
import { METRIC_NAMES } from '../../src/metrics.js';
import {
  answerOf,
  captureLog,
  generateCerts,
  httpsRequest,
  postReview,
  startServer,
  tempDir,
} from '../server/support.js';
import { eventually } from '../../harness/commands.js';
import { loadReview } from '../../harness/fixtures.js';

const path = contract.webhook.mutatePodsPath;
const fingerprintOf = (certFile: string): string => new X509Certificate(readFileSync(certFile)).fingerprint256;

t.test('swapping the files for a certificate from a new CA', async (t) => {
  const dir = tempDir(t);
  const first = generateCerts(dir);
  const oldCa = readFileSync(first.caFile);
  const oldFingerprint = fingerprintOf(first.certFile);
  const { server, port } = await startServer(t, {
    tls: { certFile: first.certFile, keyFile: first.keyFile, debounceMs: 50 },
  });
  const reloader = server.certificate!;

  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: oldCa });
  t.teardown(() => agent.destroy());
  const before = await postReview(port, path, oldCa, loadReview('pod-api'), agent);
  t.equal(before.status, 200);
  t.equal(before.fingerprint256, oldFingerprint, 'the first certificate is served');

  const loaded = once(reloader, 'loaded');
  generateCerts(dir, { newCa: true });
  const newCa = readFileSync(first.caFile);
  const newFingerprint = fingerprintOf(first.certFile);
  t.not(newFingerprint, oldFingerprint);
  const [info] = await loaded;
  t.equal(info.fingerprint256, newFingerprint, 'the reloader loaded the new pair');

  const fresh = await postReview(port, path, newCa, loadReview('pod-api'));
  t.equal(fresh.status, 200);
  t.equal(fresh.fingerprint256, newFingerprint, 'a new handshake sees the new certificate, trusted by the new CA');
  await t.rejects(
    postReview(port, path, oldCa, loadReview('pod-api')),
    { code: /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|CERT_SIGNATURE_FAILURE|UNABLE_TO_GET_ISSUER_CERT/ },
    'a new handshake that trusts only the old CA fails: the old certificate is no longer served',
  );

  const kept = await postReview(port, path, oldCa, loadReview('pod-web'), agent);
  t.equal(kept.status, 200, 'the open keep-alive connection keeps working');
  t.ok(kept.reusedSocket, 'on the same connection');
  t.equal(kept.socket, before.socket, 'the very same socket');
  t.equal(kept.fingerprint256, oldFingerprint, 'with the certificate it was opened with');
  t.equal(answerOf(kept).uid, loadReview('pod-web').request.uid);

  const metrics = await server.health.inject({ method: 'GET', url: '/metrics' });
  t.match(metrics.body, new RegExp(`${METRIC_NAMES.certificateReloads}\\{result="loaded"\\} 2`), 'two loads counted');
});

t.test('a broken or half-written pair keeps the previous certificate', async (t) => {
  const dir = tempDir(t);
  const certs = generateCerts(dir);
  const ca = readFileSync(certs.caFile);
  const servedFingerprint = fingerprintOf(certs.certFile);
  const captured = captureLog();
  const { server, port } = await startServer(t, {
    log: captured.log,
    tls: { certFile: certs.certFile, keyFile: certs.keyFile, debounceMs: 50 },
  });
  const failures = () =>
    captured.lines().filter((l) => l.msg === 'new serving certificate rejected; the previous one stays in use');

  // A key from another pair: the certificate and key do not match.
  const other = generateCerts(tempDir(t), { newCa: true });
  copyFileSync(other.keyFile, certs.keyFile);
  await eventually('the mismatched pair to be rejected', () => failures().length === 1);
  t.match(failures()[0], { problem: /do not load/, keptPrevious: true });
  t.equal(
    (await postReview(port, path, ca, loadReview('pod-api'))).fingerprint256,
    servedFingerprint,
    'still the first certificate',
  );

  // Half written: the certificate file cut in the middle.
  const pem = readFileSync(other.certFile, 'utf8');
  writeFileSync(certs.certFile, pem.slice(0, Math.floor(pem.length / 2)));
  await eventually('the truncated certificate to be rejected', () => failures().length === 2);
  t.equal(
    (await postReview(port, path, ca, loadReview('pod-api'))).fingerprint256,
    servedFingerprint,
    'still the first certificate',
  );
  t.ok(server.readiness().certificate, 'readiness keeps the loaded certificate');

  // Completing the pair loads it.
  const loaded = once(server.certificate!, 'loaded');
  copyFileSync(other.certFile, certs.certFile);
  await loaded;
  const otherCa = readFileSync(other.caFile);
  t.equal(
    (await postReview(port, path, otherCa, loadReview('pod-api'))).fingerprint256,
    fingerprintOf(other.certFile),
    'the completed pair is served',
  );
  t.notMatch(captured.text(), /BEGIN|PRIVATE KEY/, 'no PEM material in the log');
});

t.test('a Kubernetes Secret volume update (..data symlink swap) is noticed', async (t) => {
  // The layout kubelet writes: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/
  const volume = tempDir(t);
  const writeVersion = (name: string, newCa: boolean): string => {
    const source = generateCerts(join(volume, '..source'), { newCa });
    mkdirSync(join(volume, name));
    copyFileSync(source.certFile, join(volume, name, 'tls.crt'));
    copyFileSync(source.keyFile, join(volume, name, 'tls.key'));
    return fingerprintOf(source.certFile);
  };
  const firstFingerprint = writeVersion('..2026_01_01_00_00_00.1', true);
  symlinkSync('..2026_01_01_00_00_00.1', join(volume, '..data'));
  symlinkSync('..data/tls.crt', join(volume, 'tls.crt'));
  symlinkSync('..data/tls.key', join(volume, 'tls.key'));
  const ca = readFileSync(join(volume, '..source', 'ca.crt'));

  const { server, port } = await startServer(t, {
    tls: { certFile: join(volume, 'tls.crt'), keyFile: join(volume, 'tls.key'), debounceMs: 50 },
  });
  t.equal((await postReview(port, path, ca, loadReview('pod-api'))).fingerprint256, firstFingerprint);

  const secondFingerprint = writeVersion('..2026_01_02_00_00_00.2', false);
  const loaded = once(server.certificate!, 'loaded');
  symlinkSync('..2026_01_02_00_00_00.2', join(volume, '..data_tmp'));
  renameSync(join(volume, '..data_tmp'), join(volume, '..data'));
  await loaded;
  t.equal(
    (await postReview(port, path, ca, loadReview('pod-api'))).fingerprint256,
    secondFingerprint,
    'the renewed certificate is served',
  );
});

t.test('no certificate at start: not ready, then loaded by the poll once the files appear', async (t) => {
  const dir = join(tempDir(t), 'not-yet');
  const captured = captureLog();
  const { server, port } = await startServer(t, {
    log: captured.log,
    tls: { certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key'), pollIntervalMs: 100, debounceMs: 20 },
  });
  t.equal(server.readiness().certificate, false);
  t.equal(server.readiness().ready, false);
  t.match(
    captured.lines().find((l) => l.msg === 'no serving certificate could be loaded'),
    { problem: /cannot read the certificate files: ENOENT/ },
  );
  // The folder does not exist, so it cannot be watched: only the poll can find the files.
  const loaded = once(server.certificate!, 'loaded');
  const certs = generateCerts(dir);
  await loaded;
  t.equal(server.readiness().certificate, true);
  const res = await httpsRequest({
    port,
    path,
    ca: readFileSync(certs.caFile),
    method: 'POST',
    body: JSON.stringify(loadReview('pod-api')),
    headers: { 'content-type': 'application/json' },
  });
  t.equal(res.status, 200);
  t.equal(res.fingerprint256, fingerprintOf(certs.certFile));
});
