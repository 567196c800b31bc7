// The nginx proxy's default.conf (<release>-proxy: the MetalLB LoadBalancer, and the Ingress's /e/), as
// `helm template` renders it, loaded by the real nginx (Debian's nginx-light) run as the container runs it:
// uid 101 as in nginxinc/nginx-unprivileged, stdout and stderr as pipes, default.conf bind-mounted read-only
// at the chart's mountPath inside the image's main nginx.conf (reproduced below), /tmp a fresh emptyDir.
// Service names are mapped to loopback by the resolver nginx really uses (glibc, /etc/hosts): a private mount
// namespace gets an /etc/hosts that maps each Service name to its own loopback address, where one stub HTTP
// server per Service listens. So proxy_pass lines are loaded exactly as rendered (names and ports: the
// Services' ports are set to free ports through the chart's values); the one edit is `listen 8080`, which
// becomes a free loopback port. The 3600 s proxy timeouts are not exercised: that would take a timing test.
import t, { type Test } from 'tap';
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, request, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { contract } from '../../src/contract.js';
import { containersOf, find, type Json } from '../../harness/helm.js';
import { releaseName, renderChart } from '../chart/support.js';
import { reservePort } from '../../harness/ports.js';
import { program } from '../../harness/programs/programs.js';
import {
  asUser,
  inMountNamespace,
  privateDir,
  requireRoot,
  runProgram,
  startProgram,
  waitForPort,
  type BindMount,
} from '../../harness/programs/run.js';

requireRoot('nginx as the proxy container runs it (uid 101, private mounts)');
const nginx = program('nginx');
const NGINX_UID = 101; // nginxinc/nginx-unprivileged's nginx user (the chart's podSecurityContext)
const proxyName = releaseName('component', contract.components.proxy);
const svc = (component: string): string => releaseName('component', component);

// nginxinc/nginx-unprivileged's /etc/nginx/nginx.conf: pid and temp files in /tmp, access log to stdout
// (the image links /var/log/nginx/access.log to /dev/stdout), conf.d/*.conf inside http {}.
const MAIN_CONF = `worker_processes 1;
error_log /dev/stderr notice;
pid /tmp/nginx.pid;
events { worker_connections 1024; }
http {
  proxy_temp_path /tmp/proxy_temp;
  client_body_temp_path /tmp/client_temp;
  fastcgi_temp_path /tmp/fastcgi_temp;
  uwsgi_temp_path /tmp/uwsgi_temp;
  scgi_temp_path /tmp/scgi_temp;
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log /dev/stdout;
  sendfile on;
  keepalive_timeout 65;
  include /etc/nginx/conf.d/*.conf;
}
`;

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  bodyBytes: number;
}
interface Stub {
  component: string;
  address: string;
  port: number;
  seen: Seen[];
  held: ServerResponse[];
}

/** One stub per upstream Service, each on its own loopback address; /console/api/stream holds its response open. */
async function startStub(t: Test, component: string, address: string): Promise<Stub> {
  const { port, release: free } = await reservePort();
  const stub: Stub = { component, address, port, seen: [], held: [] };
  const server = createServer((req, res) => {
    let bodyBytes = 0;
    req.on('data', (b: Buffer) => {
      bodyBytes += b.length;
    });
    req.on('end', () => {
      stub.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, bodyBytes });
      if (req.url === '/console/api/stream') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: first\n\n');
        stub.held.push(res);
        return;
      }
      res.end(`stub ${component}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(port, address, resolve));
  t.teardown(() => {
    for (const r of stub.held) r.destroy();
    server.close();
    free();
  });
  return stub;
}

interface Proxy {
  port: number;
  stubs: Record<string, Stub>;
}

const COMPONENTS = [contract.components.api, contract.components.web, contract.components.pluginDaemon] as const;
const VALUE_KEY: Record<string, string> = {
  [contract.components.api]: 'api',
  [contract.components.web]: 'web',
  [contract.components.pluginDaemon]: 'pluginDaemon',
};

async function renderProxy(
  stubs: Record<string, Stub>,
): Promise<{ conf: string; mountPath: string; readOnly: boolean }> {
  const ports = Object.fromEntries(COMPONENTS.map((c) => [VALUE_KEY[c]!, { service: { port: stubs[c]!.port } }]));
  const { objects } = await renderChart({ loadBalancer: { enabled: true }, ...ports });
  const conf = String((find(objects, 'ConfigMap', proxyName).data as Json)['default.conf']);
  const mount = ((containersOf(find(objects, 'Deployment', proxyName))[0]!.volumeMounts ?? []) as Json[]).find(
    (m) => m.name === 'config',
  )!;
  return { conf, mountPath: String(mount.mountPath), readOnly: mount.readOnly === true };
}

/** The files of the container: main nginx.conf, mime.types, the rendered default.conf, /etc/hosts, /tmp. */
function containerFiles(dir: string, conf: string, port: number, stubs: Record<string, Stub>): BindMount[] {
  const etc = join(dir, 'etc-nginx');
  mkdirSync(join(etc, 'conf.d'), { recursive: true });
  writeFileSync(join(etc, 'nginx.conf'), MAIN_CONF);
  copyFileSync('/etc/nginx/mime.types', join(etc, 'mime.types'));
  writeFileSync(join(etc, 'conf.d', 'default.conf'), '');
  writeFileSync(join(dir, 'default.conf'), conf.replace(/^(\s*)listen 8080;$/m, `$1listen 127.0.0.1:${port};`), {
    mode: 0o644,
  });
  const hosts = COMPONENTS.map((c) => `${stubs[c]!.address} ${svc(c)}`).join('\n');
  writeFileSync(join(dir, 'hosts'), `127.0.0.1 localhost\n${hosts}\n`, { mode: 0o644 });
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  chmodSync(tmp, 0o777);
  return [
    { source: etc, target: '/etc/nginx', readOnly: true },
    { source: join(dir, 'default.conf'), target: '/etc/nginx/conf.d/default.conf', readOnly: true },
    { source: join(dir, 'hosts'), target: '/etc/hosts', readOnly: true },
    { source: tmp, target: '/tmp' },
  ];
}

async function startProxy(t: Test): Promise<Proxy> {
  const addresses = ['127.0.0.11', '127.0.0.12', '127.0.0.13'];
  const stubs: Record<string, Stub> = {};
  for (const [i, c] of COMPONENTS.entries()) stubs[c] = await startStub(t, c, addresses[i]!);
  const rendered = await renderProxy(stubs);
  t.equal(
    rendered.mountPath,
    '/etc/nginx/conf.d/default.conf',
    'default.conf is mounted where the image includes conf.d',
  );
  t.ok(rendered.readOnly, 'default.conf is mounted read-only');
  t.equal(rendered.conf.match(/^\s*listen 8080;$/gm)?.length, 1, 'default.conf listens on 8080, once');
  const { port, release: free } = await reservePort();
  t.teardown(free);
  const mounts = containerFiles(privateDir('nginx'), rendered.conf, port, stubs);
  const run = (args: string[]): { command: string; args: string[] } =>
    inMountNamespace(mounts, ...spread(asUser(NGINX_UID, NGINX_UID, nginx, args)));
  const check = await runProgram({ name: 'nginx-t', ...run(['-t']) });
  if (check.status !== 0) t.comment(check.stderr);
  t.equal(check.status, 0, 'nginx -t accepts the rendered config');
  t.match(check.stderr, /test is successful/);
  const started = startProgram({ name: 'nginx', ...run(['-g', 'daemon off;']) });
  t.teardown(() => started.stop());
  await waitForPort(started, '127.0.0.1', port);
  return { port, stubs };
}

const spread = (c: { command: string; args: string[] }): [string, string[]] => [c.command, c.args];

interface Reply {
  status: number;
  body: string;
}

function get(port: number, path: string, headers: Record<string, string> = {}, body?: Buffer): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const options = {
      host: '127.0.0.1',
      port,
      path,
      method: body ? 'POST' : 'GET',
      headers: { host: 'dify.example.com', ...headers },
    };
    const req = request(options, (res) => {
      let text = '';
      res.on('data', (b: Buffer) => {
        text += b.toString('utf8');
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.once('error', reject);
    req.end(body);
  });
}

// Dify 1.11's docker/nginx/conf.d/default.conf.template: each route, a path under it, the Service it reaches.
const ROUTES: [string, string, string][] = [
  ['/console/api', '/console/api/setup?step=1', contract.components.api],
  ['/api', '/api/meta', contract.components.api],
  ['/v1', '/v1/chat-messages', contract.components.api],
  ['/files', '/files/abc/file-preview', contract.components.api],
  ['/mcp', '/mcp/server/abc/mcp', contract.components.api],
  ['/triggers', '/triggers/webhook/abc', contract.components.api],
  ['/e/', '/e/hook123/callback?x=1', contract.components.pluginDaemon],
  ['/explore', '/explore/apps', contract.components.web],
  ['/', '/signin', contract.components.web],
];

t.test(
  'the rendered proxy config: nginx -t, then every route reaches its Service with the headers Dify needs',
  async (t) => {
    const proxy = await startProxy(t);
    const health = await get(proxy.port, '/nginx-health');
    t.same([health.status, health.body], [200, 'ok'], '/nginx-health answers itself');
    for (const [route, path, component] of ROUTES) {
      const before = COMPONENTS.map((c) => proxy.stubs[c]!.seen.length);
      const reply = await get(proxy.port, path);
      t.equal(reply.body, `stub ${component}`, `${route}: ${path} reaches ${svc(component)}`);
      const after = COMPONENTS.map((c) => proxy.stubs[c]!.seen.length);
      t.same(
        after.map((n, i) => n - before[i]!),
        COMPONENTS.map((c) => (c === component ? 1 : 0)),
        `${route}: only that Service`,
      );
      const seen = proxy.stubs[component]!.seen.at(-1)!;
      t.equal(seen.url, path, `${route}: path and query unchanged`);
      t.equal(seen.headers.host, 'dify.example.com', `${route}: Host kept`);
      t.equal(seen.headers['x-forwarded-for'], '127.0.0.1', `${route}: X-Forwarded-For`);
      t.equal(seen.headers['x-forwarded-proto'], 'http', `${route}: X-Forwarded-Proto`);
      const hook = component === contract.components.pluginDaemon ? `http://dify.example.com${path}` : undefined;
      t.equal(
        seen.headers['dify-hook-url'],
        hook,
        `${route}: Dify-Hook-Url ${hook ? "as Dify's nginx sets it" : 'absent'}`,
      );
    }
  },
);

t.test(
  'behind a TLS Ingress: the scheme the controller reports goes into Dify-Hook-Url and X-Forwarded-Proto',
  async (t) => {
    const proxy = await startProxy(t);
    const daemon = proxy.stubs[contract.components.pluginDaemon]!;
    await get(proxy.port, '/e/hook123/x', { 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.7' });
    const seen = daemon.seen.at(-1)!;
    t.equal(seen.headers['dify-hook-url'], 'https://dify.example.com/e/hook123/x', 'Dify-Hook-Url carries https');
    t.equal(seen.headers['x-forwarded-proto'], 'https', 'X-Forwarded-Proto stays https');
    t.equal(seen.headers['x-forwarded-for'], '203.0.113.7, 127.0.0.1', 'the client address is kept, the hop appended');
    await get(proxy.port, '/e/hook123/y', { 'x-forwarded-proto': 'gopher' });
    t.equal(
      daemon.seen.at(-1)!.headers['dify-hook-url'],
      'http://dify.example.com/e/hook123/y',
      "any other value: the connection's scheme",
    );
  },
);

t.test('body size and streaming as the chart sets them: 100M bodies, unbuffered responses (SSE)', async (t) => {
  const proxy = await startProxy(t);
  const api = proxy.stubs[contract.components.api]!;
  const twoMiB = Buffer.alloc(2 * 1024 * 1024, 0x61);
  const upload = await get(
    proxy.port,
    '/console/api/files/upload',
    { 'content-type': 'application/octet-stream' },
    twoMiB,
  );
  t.equal(upload.status, 200, "a 2 MiB upload passes (nginx's own default limit is 1 MiB)");
  t.equal(api.seen.at(-1)!.bodyBytes, twoMiB.length, 'the whole body reaches api');

  const before = api.seen.length;
  t.equal(await statusOfDeclaredBody(proxy.port, 100 * 1024 * 1024 + 1), 413, 'a body over 100M is refused by nginx');
  t.equal(api.seen.length, before, 'the refused upload never reached api');

  // The stub sends one event and holds the response open: it reaches the client only if nginx does not buffer.
  const first = await firstChunk(proxy.port, '/console/api/stream');
  t.equal(first, 'data: first\n\n', 'the first event arrives while the upstream response is still open');
});

/** The status nginx answers to a request head that declares `length` body bytes (none are sent). */
function statusOfDeclaredBody(port: number, length: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let text = '';
    socket.on('data', (b: Buffer) => {
      text += b.toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      if (m) {
        socket.destroy();
        resolve(Number(m[1]));
      }
    });
    socket.once('error', reject);
    socket.write(
      `POST /console/api/files/upload HTTP/1.1\r\nHost: dify.example.com\r\nContent-Length: ${length}\r\n\r\n`,
    );
  });
}

/** The first chunk of a response; fails if none arrives while the upstream holds the response open. */
function firstChunk(port: number, path: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no chunk of ${path} arrived: nginx buffers the response`));
    }, 20_000);
    const req = request({ host: '127.0.0.1', port, path, headers: { host: 'dify.example.com' } }, (res) => {
      res.once('data', (b: Buffer) => {
        clearTimeout(timer);
        req.destroy();
        resolve(b.toString('utf8'));
      });
    });
    req.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
}
