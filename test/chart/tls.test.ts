// The reuse rule of dify-guard's Helm-generated certificate ("dify.guard.tlsMaterial"), called directly
// through a wrapper chart that hands it a given "existing" Secret, as `lookup` would on upgrade:
// reuse only a complete Secret made for the same Service DNS names, regenerate otherwise.
// (install.test.ts checks the same through a real `helm upgrade`.)
import { X509Certificate } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { chartDir, find, ofKind, parseObjects, requiredValues, template, type Json } from '../../harness/helm.js';
import { renderChart } from './support.js';

const wrapper = mkdtempSync(join(tmpdir(), 'dify-tls-wrapper-'));
t.teardown(() => rmSync(wrapper, { recursive: true, force: true }));
mkdirSync(join(wrapper, 'templates'));
mkdirSync(join(wrapper, 'files'));
cpSync(chartDir, join(wrapper, 'charts', 'dify'), { recursive: true });
// The named templates read the contract from the root chart's files.
cpSync(join(chartDir, 'files', 'contract.json'), join(wrapper, 'files', 'contract.json'));
writeFileSync(join(wrapper, 'Chart.yaml'), 'apiVersion: v2\nname: tls-wrapper\nversion: 0.0.1\n');
writeFileSync(
  join(wrapper, 'templates', 'material.yaml'),
  [
    'apiVersion: v1',
    'kind: ConfigMap',
    'metadata: {name: material}',
    'data:',
    '{{- $c := include "dify.contract" . | fromJson }}',
    '  material: {{ include "dify.guard.tlsMaterial" (dict "root" . "c" $c "existing" .Values.existing) | quote }}',
    '',
  ].join('\n'),
);

interface Material {
  caCrt: string;
  tlsCrt: string;
  tlsKey: string;
  reused: boolean;
}

async function material(existing: Json | null, namespace = 'dify'): Promise<Material> {
  const r = await template(
    { dify: requiredValues(), webhook: { tls: { validityDays: 30 } }, existing },
    { chart: wrapper, namespace, args: ['--show-only', 'templates/material.yaml'] },
  );
  if (r.status !== 0) throw new Error(r.stderr);
  const text = String((parseObjects(r.stdout)[0]!.data as Json).material);
  const m = Object.fromEntries(
    text
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]),
  );
  return { caCrt: m.caCrt!, tlsCrt: m.tlsCrt!, tlsKey: m.tlsKey!, reused: m.reused === 'true' };
}

// The Secret exactly as the chart renders it on a first install (what lookup returns on upgrade).
const { objects } = await renderChart();
const rendered = ofKind(objects, 'Secret').find((s) => s.type === 'kubernetes.io/tls')!;

t.test('no existing Secret: a new CA and a certificate it signed', async (t) => {
  const m = await material(null);
  t.equal(m.reused, false);
  const ca = new X509Certificate(Buffer.from(m.caCrt, 'base64'));
  t.ok(new X509Certificate(Buffer.from(m.tlsCrt, 'base64')).verify(ca.publicKey));
  t.match(Buffer.from(m.tlsKey, 'base64').toString(), /PRIVATE KEY/);
  const again = await material(null);
  t.not(again.caCrt, m.caCrt, 'each generation is fresh (so reuse is what keeps it stable)');
});

t.test("the chart's own Secret from a previous release: reused as is", async (t) => {
  const data = rendered.data as Record<string, string>;
  const m = await material(rendered);
  t.equal(m.reused, true);
  t.same([m.caCrt, m.tlsCrt, m.tlsKey], [data['ca.crt'], data['tls.crt'], data['tls.key']]);
});

t.test('an incomplete Secret (no CA, or no key) is replaced', async (t) => {
  for (const missing of ['ca.crt', 'tls.key']) {
    const data = { ...(rendered.data as Record<string, string>) };
    delete data[missing];
    const m = await material({ ...rendered, data });
    t.equal(m.reused, false, `without ${missing}`);
  }
});

t.test('a Secret made for other DNS names (a renamed Service) is replaced', async (t) => {
  const m = await material(rendered, 'elsewhere');
  t.equal(m.reused, false);
  const noAnnotation = await material({ ...rendered, metadata: { ...(rendered.metadata as Json), annotations: {} } });
  t.equal(noAnnotation.reused, false, 'an unlabelled Secret is not trusted to match');
});

t.test('the rendered Secret records its DNS names, and the webhooks trust its CA', async (t) => {
  const annotations = (rendered.metadata as Json).annotations as Record<string, string>;
  const names = Object.values(annotations).join(',');
  const service = find(objects, 'Service', names.split(',')[0]!);
  t.ok(service, "the first name is dify-guard's Service");
  const configs = [
    ...ofKind(objects, 'MutatingWebhookConfiguration'),
    ...ofKind(objects, 'ValidatingWebhookConfiguration'),
  ];
  for (const c of configs) {
    for (const w of c.webhooks as Json[]) t.equal((w.clientConfig as Json).caBundle, (rendered.data as Json)['ca.crt']);
  }
  const mode = await renderChart({ webhook: { tls: { validityDays: 7 } } });
  const cert = new X509Certificate(
    Buffer.from(
      String((ofKind(mode.objects, 'Secret').find((s) => s.type === 'kubernetes.io/tls')!.data as Json)['tls.crt']),
      'base64',
    ),
  );
  const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
  t.ok(days > 6 && days < 8, 'webhook.tls.validityDays sets the validity');
});
