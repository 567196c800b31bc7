// NOTES.txt prints the guide's check commands for THIS release and namespace. helm template does not
// render NOTES.txt, so a temporary copy of the chart renders it through `tpl` as a ConfigMap.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import { chartDir, parseObjects, requiredValues, template, type Json } from '../../harness/helm.js';
import { withRequired } from './support.js';

const copy = mkdtempSync(join(tmpdir(), 'dify-notes-'));
t.teardown(() => rmSync(copy, { recursive: true, force: true }));
cpSync(chartDir, copy, { recursive: true });
writeFileSync(join(copy, 'files', 'notes.txt'), readFileSync(join(chartDir, 'templates', 'NOTES.txt')));
writeFileSync(
  join(copy, 'templates', 'zz-notes.yaml'),
  'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ tpl (.Files.Get "files/notes.txt") . | quote }}\n',
);

async function notes(values: Json, release: string, namespace: string): Promise<string> {
  const r = await template(values, {
    chart: copy,
    release,
    namespace,
    args: ['--show-only', 'templates/zz-notes.yaml'],
  });
  if (r.status !== 0) throw new Error(r.stderr);
  return String((parseObjects(r.stdout)[0]!.data as Json).notes);
}

/**
 * The guide's check commands (確認コマンド and the Secret audit trail), for one release. The plugin
 * daemon's health route is /health/check (its http_server.go); the guide's /health answers 404.
 */
function guideCommands(release: string, ns: string): string[] {
  const daemon = expandName(contract.names.appLabel, release, contract.components.pluginDaemon);
  const api = expandName(contract.names.appLabel, release, contract.components.api);
  return [
    `kubectl get pods -n ${ns}`,
    `kubectl get deploy,po,svc -n ${ns} | grep -iE "plugin|daemon|dify"`,
    `kubectl get jobs -n ${ns}`,
    `kubectl logs -n ${ns} job/${expandName(contract.names.migrationJob, release)}`,
    `kubectl exec -n ${ns} ${expandName(contract.names.postgresql, release)}-0 -- psql -U dify -d dify -c ` +
      `"SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename;"`,
    `kubectl logs -n ${ns} -l app=${daemon}`,
    `kubectl exec -n ${ns} $(kubectl get pods -n ${ns} -l app=${daemon} -o jsonpath='{.items[0].metadata.name}') -- curl -s http://localhost:5002/health/check`,
    `kubectl exec -n ${ns} $(kubectl get pods -n ${ns} -l app=${api} -o jsonpath='{.items[0].metadata.name}') -- curl -sv http://${expandName(contract.names.component, release, contract.components.pluginDaemon)}:5002/health/check`,
    `kubectl get events -n ${ns} --field-selector involvedObject.name=${expandName(contract.names.postgresqlSecret, release)}`,
  ];
}

for (const [release, ns] of [
  ['dify', 'dify'],
  ['acme', 'prod'],
] as const) {
  t.test(`release ${release} in ${ns}: the guide's commands, with this release's names`, async (t) => {
    const text = await notes(requiredValues(), release, ns);
    const lines = text.split('\n').map((l) => l.trim());
    for (const command of guideCommands(release, ns)) t.ok(lines.includes(command), command);
    t.match(text, expandName(contract.names.postgresqlPvc, release), 'names the PVC that keeps the password');
    t.match(text, SECRET_KEYS.postgresPassword);
  });
}

t.test(
  'warnings for a single dify-guard replica; the vector store, Redis auth and NetworkPolicies as rendered',
  async (t) => {
    const plain = await notes(requiredValues(), 'dify', 'dify');
    t.notMatch(plain, /WARNING/, 'no warning by default');
    t.match(
      plain,
      /Vector store: pgvector in the bundled PostgreSQL/,
      'pgvector by default, and no claim about weaviate',
    );
    t.notMatch(plain, /weaviate/i);
    t.match(plain, /Redis requires a password \(Secret dify-redis, key redis-password\)/);
    t.match(plain, /NetworkPolicies: the sandbox reaches only the ssrf-proxy and DNS/);
    t.match(
      plain,
      'kubectl logs -n dify dify-postgresql-0 -c check-data-directory',
      'where the data-safety check explains a refusal',
    );
    const single = await notes(withRequired({ webhook: { replicaCount: 1 } }), 'dify', 'dify');
    t.match(single, /WARNING: webhook\.replicaCount is 1/);
    const open = await notes(
      withRequired({
        vectorStore: { type: '' },
        pluginDaemon: { redis: { authEnabled: false } },
        networkPolicy: { enabled: false },
      }),
      'dify',
      'dify',
    );
    t.match(open, /vectorStore\.type is empty, so VECTOR_STORE is not set/);
    t.match(open, /WARNING: pluginDaemon\.redis\.authEnabled=false/);
    t.match(open, /WARNING: networkPolicy\.enabled=false/);
    const alpineImage = { postgresql: { image: { repository: 'postgres', tag: '15-alpine' } } };
    const alpine = await notes(withRequired(alpineImage), 'dify', 'dify');
    t.match(alpine, /WARNING: postgresql\.image\.repository is not a pgvector image/);
    const off = await notes(withRequired({ webhook: { enabled: false } }), 'dify', 'dify');
    t.match(off, /dify-guard is not installed by this release/);
  },
);

t.test('README.md (Japanese) gives the same commands for release dify', async (t) => {
  const readme = readFileSync(join(chartDir, 'README.md'), 'utf8');
  for (const command of guideCommands('dify', 'dify')) t.ok(readme.includes(command), command);
  t.notMatch(
    readme,
    /localhost:5002\/health(?!\/check)[^\s|]*\s*$/m,
    'no plugin daemon health command on the 404 path',
  );
});

t.test(
  'public address: a note when the chart cannot know it, none once ingress.host is set; /e/ through the proxy',
  async (t) => {
    const unknown = await notes(requiredValues(), 'dify', 'dify');
    t.match(unknown, /NOTE: the chart does not know Dify's public address/);
    t.match(unknown, /Plugin endpoints \(\/e\/\) go through the nginx dify-proxy/);
    const known = await notes(withRequired({ ingress: { host: 'dify.example.com' } }), 'dify', 'dify');
    t.notMatch(known, /does not know Dify's public address/);
    const direct = await notes(withRequired({ ingress: { pluginEndpointsThroughProxy: false } }), 'dify', 'dify');
    t.notMatch(direct, /go through the nginx/);
  },
);
