// The serving certificate renewed five times while the real dify-guard process judges a continuous
// load over long-lived keep-alive connections and fresh connections (a TLS handshake per request).
// The files are written as kubelet updates a Secret volume (new `..<timestamp>` folder, `..data`
// symlink swapped by rename, old folder removed). No request fails; every new handshake after a
// reload presents the new certificate; the keep-alive connections opened before the first renewal
// stay open on their original certificate and keep working.
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { SETTINGS } from '../../src/config.js';
import { METRIC_NAMES } from '../../src/metrics.js';
import { startControlPlane } from '../../harness/controlplane/harness.js';
import { startDifyGuard } from '../../harness/controlplane/dify-guard.js';
import { generateServingCert } from '../../harness/controlplane/pki.js';
import { eventually } from '../../harness/commands.js';
import { byProblem, counterValues, sleep, startLoad, type LoadRequestRecord } from './load.js';

const ROTATIONS = 5;
const KEEP_ALIVE_WORKERS = 4;
const FRESH_WORKERS = 4;
/** Fresh handshakes each certificate must have served before the next renewal. */
const HANDSHAKES_PER_CERTIFICATE = 20;
/** Load on each certificate after it has served those handshakes, so the run lasts several seconds. */
const LOAD_PER_CERTIFICATE_MS = 1000;
// About 2,700 on this machine alone; the floor leaves room for a suite running files in parallel.
const MIN_REQUESTS = 600;

const fingerprintOf = (certFile: string): string => new X509Certificate(readFileSync(certFile)).fingerprint256;

/** A Secret volume as kubelet lays it out: tls.crt -> ..data/tls.crt, ..data -> ..<version>/. */
class SecretVolume {
  private version = 0;
  private current: string | undefined;
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  get certFile(): string {
    return join(this.dir, 'tls.crt');
  }
  get keyFile(): string {
    return join(this.dir, 'tls.key');
  }

  /** kubelet's AtomicWriter: write a new folder, swap `..data` to it in one rename, remove the old folder. */
  publish(source: { certFile: string; keyFile: string }): void {
    const name = `..2026_11_24_00_00_0${this.version}.${1000 + this.version}`;
    this.version += 1;
    mkdirSync(join(this.dir, name));
    copyFileSync(source.certFile, join(this.dir, name, 'tls.crt'));
    copyFileSync(source.keyFile, join(this.dir, name, 'tls.key'));
    symlinkSync(name, join(this.dir, '..data_tmp'));
    renameSync(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    if (this.current === undefined) {
      symlinkSync('..data/tls.crt', this.certFile);
      symlinkSync('..data/tls.key', this.keyFile);
    } else {
      rmSync(join(this.dir, this.current), { recursive: true, force: true });
    }
    this.current = name;
  }
}

t.test('five certificate renewals under a continuous load over keep-alive and fresh connections', async (t) => {
  const cp = await startControlPlane(t, { name: 'rotation' });
  // The CA dify-guard's launcher uses (it reuses a CA already in its folder); renewals are signed by it too.
  const caDir = join(cp.dir, 'dify-guard-tls');
  generateServingCert(caDir, 'dify-guard', 'dify');
  const renewals = join(cp.dir, 'renewals');
  mkdirSync(renewals);
  const issue = (): { certFile: string; keyFile: string; fingerprint: string } => {
    copyFileSync(join(caDir, 'ca.crt'), join(renewals, 'ca.crt'));
    copyFileSync(join(caDir, 'ca.key'), join(renewals, 'ca.key'));
    const cert = generateServingCert(renewals, 'dify-guard', 'dify');
    return { ...cert, fingerprint: fingerprintOf(cert.certFile) };
  };
  const volume = new SecretVolume(join(cp.dir, 'tls-volume'));
  const first = issue();
  volume.publish(first);
  // No tap instrumentation in dify-guard (NODE_OPTIONS): coverage recording would slow the load it serves.
  const guard = await startDifyGuard(t, cp, {
    env: { [SETTINGS.tlsCertFile.env]: volume.certFile, [SETTINGS.tlsKeyFile.env]: volume.keyFile, NODE_OPTIONS: '' },
  });
  const ca = readFileSync(join(caDir, 'ca.crt'));
  t.equal(
    readFileSync(guard.certs.caFile).toString(),
    ca.toString(),
    'the client trusts the CA that signs every renewal',
  );

  // Which certificates a handshake may present, per epoch: both while a renewal is being picked up.
  const fingerprints = [first.fingerprint];
  const allowedByEpoch: Set<string>[] = [new Set([first.fingerprint])];
  const epoch = (): number => allowedByEpoch.length - 1;
  let running = true;
  const loadStartedAt = Date.now();
  const load = startLoad({
    port: guard.port,
    ca,
    keepAliveWorkers: KEEP_ALIVE_WORKERS,
    freshWorkers: FRESH_WORKERS,
    keepGoing: () => running,
    epoch,
  });
  t.teardown(async () => {
    running = false;
    await load.done;
    for (const agent of load.agents) agent.destroy();
  });
  const freshWith = (fingerprint: string): number =>
    load.records.filter((r) => r.lane === 'fresh' && r.fingerprint256 === fingerprint).length;
  const enoughHandshakes = async (fingerprint: string, what: string): Promise<void> =>
    eventually(what, () => freshWith(fingerprint) >= HANDSHAKES_PER_CERTIFICATE, 30_000).then(() =>
      sleep(LOAD_PER_CERTIFICATE_MS),
    );

  await enoughHandshakes(first.fingerprint, 'handshakes with the first certificate');
  const loadedLines = (fingerprint: string): boolean =>
    guard.logLines().some((l) => l.msg === 'serving certificate loaded' && l.fingerprint256 === fingerprint);
  for (let rotation = 1; rotation <= ROTATIONS; rotation++) {
    const next = issue();
    t.not(next.fingerprint, fingerprints[fingerprints.length - 1], `renewal ${rotation} is a new certificate`);
    fingerprints.push(next.fingerprint);
    allowedByEpoch.push(new Set([fingerprints[fingerprints.length - 2] as string, next.fingerprint]));
    volume.publish(next);
    await eventually(`dify-guard to load renewal ${rotation}`, () => loadedLines(next.fingerprint), 30_000);
    allowedByEpoch.push(new Set([next.fingerprint]));
    await enoughHandshakes(next.fingerprint, `handshakes with renewal ${rotation}`);
  }
  running = false;
  await load.done;
  const loadSeconds = (Date.now() - loadStartedAt) / 1000;

  const records = load.records;
  const fresh = records.filter((r) => r.lane === 'fresh');
  const keepAlive = records.filter((r) => r.lane === 'keep-alive');
  const failures = records.filter((r) => r.problem !== undefined);

  // Every fresh handshake presented a certificate that was being served while the request ran.
  const unexpected: LoadRequestRecord[] = fresh.filter((r) => {
    if (r.problem !== undefined || r.fingerprint256 === undefined) return false;
    for (let e = r.startEpoch; e <= r.endEpoch; e++) if (allowedByEpoch[e]?.has(r.fingerprint256)) return false;
    return true;
  });
  const perCertificate = fingerprints.map((f) => freshWith(f));

  // Each keep-alive worker used one socket from its first request (before any renewal) to its last.
  const keepAliveReport = Array.from({ length: KEEP_ALIVE_WORKERS }, (_, worker) => {
    const mine = keepAlive.filter((r) => r.worker === worker);
    const sockets = new Set<TLSSocket | undefined>(mine.map((r) => r.socket));
    return {
      requests: mine.length,
      sockets: sockets.size,
      openedBeforeFirstRenewal: mine[0]?.startEpoch === 0,
      lastEndedAfterLastRenewal: (mine[mine.length - 1]?.endEpoch ?? -1) === epoch(),
      certificates: [...new Set(mine.map((r) => r.fingerprint256))].map((f) => fingerprints.indexOf(f as string)),
      reusedAfterFirst: mine.slice(1).every((r) => r.reusedSocket === true),
    };
  });
  const reloads = await counterValues(guard.healthPort, METRIC_NAMES.certificateReloads);

  t.comment(
    `requests: ${records.length} (${keepAlive.length} on ${KEEP_ALIVE_WORKERS} keep-alive connections, ` +
      `${fresh.length} on fresh connections); renewals: ${ROTATIONS}; failures: ${failures.length}; ` +
      `load ran ${loadSeconds.toFixed(1)} s`,
  );
  t.comment(`fresh handshakes per certificate (initial, renewal 1..${ROTATIONS}): ${perCertificate.join(', ')}`);
  t.comment(`keep-alive requests per connection: ${keepAliveReport.map((k) => k.requests).join(', ')}`);
  t.comment(`certificate reloads counted: ${JSON.stringify(reloads)}`);

  t.same(
    byProblem(failures, (r) => `request ${r.id} (${r.lane})`),
    {},
    'no request failed: every one answered 200 with a valid review',
  );
  t.ok(records.length > MIN_REQUESTS, `more than ${MIN_REQUESTS} requests`);
  t.same(
    unexpected.map((r) => `request ${r.id}: certificate ${fingerprints.indexOf(r.fingerprint256 as string)}`),
    [],
    'every fresh handshake presented the certificate being served (the new one once it was loaded)',
  );
  t.ok(
    perCertificate.every((n) => n >= HANDSHAKES_PER_CERTIFICATE),
    `each of the ${ROTATIONS + 1} certificates served at least ${HANDSHAKES_PER_CERTIFICATE} new handshakes`,
  );
  t.same(
    keepAliveReport.map((k) => ({ ...k, requests: k.requests > 0 })),
    keepAliveReport.map(() => ({
      requests: true,
      sockets: 1,
      openedBeforeFirstRenewal: true,
      lastEndedAfterLastRenewal: true,
      certificates: [0],
      reusedAfterFirst: true,
    })),
    'each keep-alive connection opened before the first renewal stayed open on the first certificate and kept working to the end',
  );
  t.same(
    reloads,
    { 'result="loaded"': ROTATIONS + 1 },
    'the first load and each renewal counted once; no pair was ever seen half written',
  );
  t.ok(guard.process.running, 'dify-guard is still running');
});
