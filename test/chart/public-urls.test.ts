// The public URLs Dify builds for outside callers: TRIGGER_URL (workflow webhook triggers),
// ENDPOINT_URL_TEMPLATE (plugin endpoints) and PLUGIN_REMOTE_INSTALL_HOST/PORT (remote plugin debugging).
// Dify's own defaults are localhost (docs/dify-facts.md); the chart derives them from its public URL values.
import t from 'tap';
import { contract } from '../../src/contract.js';
import { envOf, template, type Json } from '../../harness/helm.js';
import { componentContainer, releaseName, renderChart, withRequired } from './support.js';

const URL_ENV = ['TRIGGER_URL', 'ENDPOINT_URL_TEMPLATE', 'PLUGIN_REMOTE_INSTALL_HOST', 'PLUGIN_REMOTE_INSTALL_PORT'];
const BACKEND = [contract.components.api, contract.components.worker, contract.components.beat];

async function urls(
  values: Json,
  component: string = contract.components.api,
): Promise<Record<string, string | undefined>> {
  const { objects } = await renderChart(values, { namespace: 'dify' });
  const c = componentContainer(objects, component);
  return Object.fromEntries(URL_ENV.map((n) => [n, envOf(c, n)?.value]));
}

t.test('default values: set on api, worker and beat, never localhost', async (t) => {
  for (const component of BACKEND) {
    const env = await urls({}, component);
    for (const name of URL_ENV) {
      t.type(env[name], 'string', `${component}: ${name} is set`);
      t.notMatch(env[name], /localhost|127\.0\.0\.1/, `${component}: ${name} is not a localhost default`);
    }
    // No public address known: paths without a host, on the same origin as the page.
    t.equal(env.TRIGGER_URL, '', `${component}: TRIGGER_URL`);
    t.equal(env.ENDPOINT_URL_TEMPLATE, '/e/{hook_id}', `${component}: ENDPOINT_URL_TEMPLATE`);
    t.equal(env.PLUGIN_REMOTE_INSTALL_HOST, `${releaseName('component', contract.components.pluginDaemon)}.dify.svc`);
    t.equal(env.PLUGIN_REMOTE_INSTALL_PORT, '5003');
  }
});

t.test(
  'derived from the public origin: dify.urls first, then the Ingress host, then the LoadBalancer address',
  async (t) => {
    const lb = (loadBalancer: Json): Json => ({
      ingress: { enabled: false },
      loadBalancer: { enabled: true, ...loadBalancer },
    });
    const cases: [string, Json, string][] = [
      [
        'TLS Ingress host',
        { ingress: { host: 'dify.example.com', tls: { enabled: true } } },
        'https://dify.example.com',
      ],
      ['plain Ingress host', { ingress: { host: 'dify.example.com' } }, 'http://dify.example.com'],
      ['LoadBalancer IP, port 80', lb({ loadBalancerIP: '192.0.2.10' }), 'http://192.0.2.10'],
      ['LoadBalancer IP, other port', lb({ loadBalancerIP: '192.0.2.10', port: 8080 }), 'http://192.0.2.10:8080'],
      ['IPv6 LoadBalancer IP', lb({ loadBalancerIP: '2001:db8::10' }), 'http://[2001:db8::10]'],
      [
        'dify.urls.serviceApi wins',
        { ingress: { host: 'dify.example.com' }, dify: { urls: { serviceApi: 'https://api.example.com/' } } },
        'https://api.example.com',
      ],
      [
        'dify.urls.consoleApi',
        { dify: { urls: { consoleApi: 'https://console.example.com' } } },
        'https://console.example.com',
      ],
    ];
    for (const [what, values, origin] of cases) {
      const env = await urls(values);
      t.equal(env.TRIGGER_URL, origin, `${what}: TRIGGER_URL`);
      t.equal(env.ENDPOINT_URL_TEMPLATE, `${origin}/e/{hook_id}`, `${what}: ENDPOINT_URL_TEMPLATE`);
    }
  },
);

t.test('explicit values win; the schema refuses a template without {hook_id}', async (t) => {
  const env = await urls({
    ingress: { host: 'dify.example.com' },
    dify: {
      urls: { trigger: 'https://hooks.example.com', endpointTemplate: 'https://plugins.example.com/e/{hook_id}' },
    },
    pluginDaemon: { remoteInstall: { host: 'debug.example.com', port: 15003 } },
  });
  t.same(env, {
    TRIGGER_URL: 'https://hooks.example.com',
    ENDPOINT_URL_TEMPLATE: 'https://plugins.example.com/e/{hook_id}',
    PLUGIN_REMOTE_INSTALL_HOST: 'debug.example.com',
    PLUGIN_REMOTE_INSTALL_PORT: '15003',
  });
  const bad = await template(withRequired({ dify: { urls: { endpointTemplate: 'https://plugins.example.com/e/' } } }));
  t.not(bad.status, 0);
  t.match(bad.stderr, /endpointTemplate/);
});
