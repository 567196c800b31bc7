// The ssrf-proxy's squid.conf, as `helm template` renders it, loaded by the real Squid (Debian's squid 5.7)
// run the way the ubuntu/squid image's entrypoint runs it: as root, `squid -Nz` then
// `squid -f /etc/squid/squid.conf -NYC`, with stdout and stderr as pipes (Squid switches to user `proxy`
// before it opens its logs). It runs in a private mount namespace where every volume the chart mounts is
// bind-mounted at the chart's mountPath (the ConfigMap read-only, an emptyDir as a fresh 0777 folder, as
// the kubelet makes it), and /run and /var/spool/squid are private folders: the host's Squid files are
// never touched. The one change to the rendered file: `http_port 3128` becomes a free loopback port.
import t, { type Test } from 'tap';
import { chownSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer, request, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { contract } from '../../src/contract.js';
import { waitFor } from '../../harness/commands.js';
import { find, podTemplateOf, type Json } from '../../harness/helm.js';
import { mainContainerOf, releaseName, renderChart } from '../chart/support.js';
import { reservePort } from '../../harness/ports.js';
import { program } from '../../harness/programs/programs.js';
import {
  inMountNamespace,
  privateDir,
  requireRoot,
  startProgram,
  waitForPort,
  type BindMount,
  type RunningProgram,
} from '../../harness/programs/run.js';

requireRoot('Squid as the ssrf-proxy container runs it (root start, then user proxy)');
const squid = program('squid');
const name = releaseName('component', contract.components.ssrfProxy);
const PROXY_UID = 13; // `proxy` in Debian's and Ubuntu's squid packages: Squid's cache_effective_user
const SQUID_CONF = '/etc/squid/squid.conf';

interface Mount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
}
interface Rendered {
  conf: string;
  mounts: Mount[];
  volumes: Json[];
}

async function renderProxy(values: Json = {}): Promise<Rendered> {
  const { objects } = await renderChart(values);
  const deployment = find(objects, 'Deployment', name);
  return {
    conf: String((find(objects, 'ConfigMap', name).data as Json)['squid.conf']),
    mounts: (mainContainerOf(deployment).volumeMounts ?? []) as Mount[],
    volumes: (podTemplateOf(deployment).spec.volumes ?? []) as Json[],
  };
}

function folder(path: string, mode: number, uid = 0): string {
  mkdirSync(path, { recursive: true });
  chmodSync(path, mode);
  chownSync(path, uid, uid);
  return path;
}

/** The Deployment's volumes as bind mounts: the ConfigMap as the config file, an emptyDir as a fresh folder. */
function volumeMounts(rendered: Rendered, confFile: string, dir: string): BindMount[] {
  return rendered.mounts.map((m) => {
    const volume = rendered.volumes.find((v) => v.name === m.name);
    if (volume?.configMap) return { source: confFile, target: m.mountPath, readOnly: m.readOnly === true };
    if (volume?.emptyDir) return { source: folder(join(dir, `volume-${m.name}`), 0o777), target: m.mountPath };
    throw new Error(`volume ${m.name}: the ssrf-proxy is expected to mount only its ConfigMap and emptyDirs`);
  });
}

interface Proxy {
  squid: RunningProgram;
  port: number;
  logs: string;
}

async function startSquid(t: Test, rendered: Rendered): Promise<Proxy> {
  const dir = privateDir('squid');
  const { port, release } = await reservePort();
  t.teardown(release);
  t.equal(rendered.conf.match(/^http_port 3128$/gm)?.length, 1, 'squid.conf listens on 3128, once');
  const confFile = join(dir, 'squid.conf');
  writeFileSync(confFile, rendered.conf.replace(/^http_port 3128$/m, `http_port 127.0.0.1:${port}`), { mode: 0o644 });
  const mounts = [
    ...volumeMounts(rendered, confFile, dir),
    { source: folder(join(dir, 'run'), 0o755), target: '/run' },
    { source: folder(join(dir, 'spool'), 0o755, PROXY_UID), target: '/var/spool/squid' },
  ];
  t.ok(
    mounts.some((m) => m.target === SQUID_CONF && m.readOnly),
    'squid.conf is mounted read-only',
  );
  const entrypoint = `${squid} -Nz -f ${SQUID_CONF} && exec ${squid} -f ${SQUID_CONF} -NYC`;
  const started = startProgram({ name: 'squid', ...inMountNamespace(mounts, 'sh', ['-c', entrypoint]) });
  t.teardown(() => started.stop());
  await waitForPort(started, '127.0.0.1', port);
  const logs = mounts.find((m) => m.target === '/var/log/squid')?.source ?? '';
  return { squid: started, port, logs };
}

interface Origin {
  port: number;
  seen: { url: string; headers: IncomingHttpHeaders }[];
}

async function startOrigin(t: Test): Promise<Origin> {
  const { port, release } = await reservePort();
  const seen: Origin['seen'] = [];
  const server = createServer((req, res) => {
    seen.push({ url: req.url ?? '', headers: req.headers });
    res.end('reached the origin');
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  t.teardown(() => {
    server.close();
    release();
  });
  return { port, seen };
}

/** A log file's text once it holds `line` (Squid buffers its log writes). */
function logged(proxy: Proxy, file: string, line: RegExp): Promise<string> {
  return waitFor(
    `${line.source} in ${file}`,
    () => {
      const text = readFileSync(join(proxy.logs, file), 'utf8');
      return line.test(text) ? text : undefined;
    },
    { timeoutMs: 15_000 },
  );
}

/** A GET for an absolute URL through the proxy, from the given loopback source address. */
function viaProxy(proxyPort: number, url: string, localAddress: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: proxyPort, path: url, localAddress, headers: { host: new URL(url).host } },
      (res) => {
        let body = '';
        res.on('data', (b: Buffer) => {
          body += b.toString('utf8');
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.once('error', reject);
    req.end();
  });
}

t.test(
  'default squid.conf: Squid starts as the container starts it, stays up, proxies allowed sources, refuses others',
  async (t) => {
    const rendered = await renderProxy();
    const origin = await startOrigin(t);
    const proxy = await startSquid(t, rendered);
    const url = `http://127.0.0.1:${origin.port}/through-the-proxy`;

    const allowed = await viaProxy(proxy.port, url, '127.0.0.1');
    if (allowed.status !== 200) t.comment(proxy.squid.output());
    t.equal(allowed.status, 200, 'a client at 127.0.0.1 (acl localhost) is proxied');
    t.equal(allowed.body, 'reached the origin');
    t.equal(origin.seen.length, 1, 'the origin got exactly that request');
    t.equal(origin.seen[0]?.url, '/through-the-proxy');

    // 127.0.0.2 is neither `localhost` (127.0.0.1) nor in `localnet` (private ranges): `http_access deny all`.
    const refused = await viaProxy(proxy.port, url, '127.0.0.2');
    t.equal(refused.status, 403, 'a source outside the allowed ACLs is refused');
    t.equal(origin.seen.length, 1, 'the refused request never reached the origin');

    t.ok(proxy.squid.running, 'Squid is still running after serving');
    // Squid writes its logs as user proxy into the emptyDir, where the image's entrypoint tails them to stdout.
    const access = await logged(proxy, 'access.log', /127\.0\.0\.2 TCP_DENIED\/403 /);
    const proxied = /127\.0\.0\.1 TCP_MISS\/200 .* GET http:\/\/127\.0\.0\.1:\d+\/through-the-proxy/;
    t.match(access, proxied, 'access.log records the proxied request');
    t.match(access, /127\.0\.0\.2 TCP_DENIED\/403 /, 'access.log records the refusal');
    t.match(
      await logged(proxy, 'cache.log', /Accepting HTTP Socket connections/),
      /Accepting HTTP/,
      'cache.log is written',
    );
    t.notMatch(proxy.squid.stderr, /FATAL/, 'no FATAL on stderr');
  },
);

t.test('ssrfProxy.blockPrivateNetworks: Squid refuses private and loopback destinations', async (t) => {
  const rendered = await renderProxy({ ssrfProxy: { blockPrivateNetworks: true } });
  const origin = await startOrigin(t);
  const proxy = await startSquid(t, rendered);
  const refused = await viaProxy(proxy.port, `http://127.0.0.1:${origin.port}/private`, '127.0.0.1');
  t.equal(refused.status, 403, 'a loopback destination is refused');
  t.equal(origin.seen.length, 0, 'nothing reached the origin');
  t.ok(proxy.squid.running, 'Squid is still running');
});

t.test(
  "a change of squid.conf changes the Deployment's checksum annotation, so the proxy restarts with it",
  async (t) => {
    const { objects: a } = await renderChart();
    const { objects: b } = await renderChart({ ssrfProxy: { blockPrivateNetworks: true } });
    const checksum = (objects: Json[]): string | undefined =>
      podTemplateOf(find(objects, 'Deployment', name)).metadata.annotations?.['checksum/config'];
    t.match(checksum(a), /^[0-9a-f]{64}$/, 'the pod template carries checksum/config');
    t.not(checksum(a), checksum(b), 'a different squid.conf, a different checksum');
  },
);
