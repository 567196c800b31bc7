// The README's "Configuration, endpoints and metrics" section is generated from the settings table
// (src/config.ts), the metric specs (src/metrics.ts) and the contract, and must match them.
// `DIFY_GUARD_UPDATE_README=1 npx tap test/server/readme.test.ts` rewrites the section.
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONFIG_FILE_ENV, OTHER_ENV, SETTINGS, SETTING_KEYS } from '../../src/config.js';
import { contract } from '../../src/contract.js';
import { LATENCY_BUCKETS_SECONDS, METRIC_SPECS } from '../../src/metrics.js';
import { repoRoot } from '../../harness/binaries.js';

const HEADING = '## Configuration, endpoints and metrics';
const readmePath = join(repoRoot, 'README.md');

const cell = (text: string): string => text.replaceAll('|', '\\|');

/** One row of the endpoints table; the parts of the answer are joined with spaces. */
const endpoint = (port: string, request: string, ...answer: string[]): string =>
  `| ${port} | \`${request}\` | ${answer.join(' ')} |`;

function renderSection(): string {
  const { securePort, healthPort, mutatePodsPath, validateSecretsPath, validateWorkloadsPath } = contract.webhook;
  const settings = SETTING_KEYS.map((key) => {
    const s = SETTINGS[key];
    return `| \`${s.env}\` | \`${String(s.default)}\` | ${cell(s.description)} |`;
  });
  const others = OTHER_ENV.map((o) => `| \`${o.env}\` | ${o.default} | ${cell(o.description)} |`);
  const metrics = Object.values(METRIC_SPECS).map(
    (m) =>
      `| \`${m.name}\` | ${m.type} | ${m.labels.length > 0 ? m.labels.map((l) => `\`${l}\``).join(', ') : '-'} | ${cell(m.help)} |`,
  );
  return [
    HEADING,
    '',
    '<!-- Generated from src/config.ts, src/metrics.ts and chart/files/contract.json by test/server/readme.test.ts;',
    '     edit those, then run `DIFY_GUARD_UPDATE_README=1 npx tap test/server/readme.test.ts`. -->',
    '',
    "dify-guard reads its settings from environment variables (the chart's Deployment sets them) and,",
    `optionally, from a JSON or YAML file named by \`${CONFIG_FILE_ENV}\` holding the same settings under`,
    'camelCase keys (`port`, `logLevel`, ...); an environment variable wins over the file, and an empty one',
    'counts as unset. Everything is checked at start: a bad setting stops the process with exit code 2',
    'and one line per problem, e.g. `dify-guard: DIFY_GUARD_PORT: must be an integer 1-65535, got "abc"`.',
    '',
    '| Variable | Default | Meaning |',
    '|---|---|---|',
    ...settings,
    ...others,
    '',
    '### Endpoints',
    '',
    '| Port | Request | Answer |',
    '|---|---|---|',
    endpoint(
      `${securePort} (HTTPS, TLS 1.2+)`,
      `POST ${mutatePodsPath}`,
      `AdmissionReview v1. Pod CREATE: the JSONPatch that enforces the Pod rules on the Dify containers`,
      `(none when nothing changes), plus a warning when the pod's \`${contract.annotations.lastApplied}\``,
      `annotation stores a literal password; anything else allowed unchanged. Each mutation is logged at`,
      `info (pod, containers, variable names).`,
    ),
    endpoint(
      `${securePort} (HTTPS, TLS 1.2+)`,
      `POST ${validateSecretsPath}`,
      `AdmissionReview v1. The PostgreSQL Secret rules; a denial is \`allowed: false\` with \`status.code\``,
      `403, reason \`Forbidden\`, and \`auditAnnotations\` \`decision\`, \`reason\`, \`pvc\`.`,
    ),
    endpoint(
      `${securePort} (HTTPS, TLS 1.2+)`,
      `POST ${validateWorkloadsPath}`,
      `AdmissionReview v1. Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob CREATE/UPDATE of`,
      `Dify: a pod template storing a literal password or \`MIGRATION_ENABLED\` other than \`"false"\` gets`,
      `warnings (variable names only) and an audit line, or a 403 refusal with`,
      `\`DIFY_GUARD_TEMPLATE_POLICY=deny\` (an UPDATE that leaves the template as it was is only warned);`,
      `\`auditAnnotations\` \`decision\`, \`mode\`, \`findings\`, \`variables\`. Objects with a controller`,
      `owner (a Deployment's ReplicaSet, a CronJob's Job) are not checked again.`,
    ),
    `| ${healthPort} (HTTP) | \`GET /healthz\` | 200 while the process runs (liveness). |`,
    endpoint(
      `${healthPort} (HTTP)`,
      `GET /readyz`,
      `200 only when the serving certificate is loaded, the PVC cache has completed its first list and no`,
      `shutdown has begun; else 503 (a watch broken later keeps it 200: only password changes are refused`,
      `meanwhile). The JSON body lists the three checks.`,
    ),
    `| ${healthPort} (HTTP) | \`GET /metrics\` | Prometheus text format (below). |`,
    '',
    'A request the webhook cannot judge is answered with an AdmissionReview whose `response.status.message`',
    'names the problem and whose `response.uid` echoes `request.uid` when there was one: 400 for malformed',
    'JSON, an empty body, or an envelope that is not an `admission.k8s.io/v1` `AdmissionReview` with a',
    '`request.uid`; 413 for a body over `DIFY_GUARD_BODY_LIMIT_BYTES`; 415 for a Content-Type other than',
    '`application/json`; 500 (uid echoed, fault logged) if a handler fails. Request bodies are never logged.',
    'The serving certificate and key are re-read when their folder changes (a Secret volume update) and',
    'every minute; a pair that does not load keeps the previous one, and open connections are not dropped.',
    'On SIGTERM, `/readyz` turns 503 and requests are still judged for `DIFY_GUARD_SHUTDOWN_DELAY_SECONDS`, each',
    'answer closing its connection (so the API server moves to a ready replica); then the webhook port stops',
    'accepting connections, in-flight requests finish, the PVC watch stops and the process exits 0, all within',
    '`DIFY_GUARD_SHUTDOWN_TIMEOUT_SECONDS`.',
    '',
    '### Metrics',
    '',
    '| Metric | Type | Labels | Meaning |',
    '|---|---|---|---|',
    ...metrics,
    '',
    `Latency buckets (seconds): ${LATENCY_BUCKETS_SECONDS.join(', ')}. The process metrics of prom-client`,
    '(`process_*`, `nodejs_*`) are exposed as well.',
    '',
  ].join('\n');
}

/** The README with its section replaced by `section` (appended when absent). */
function withSection(readme: string, section: string): string {
  const start = readme.indexOf(`${HEADING}\n`);
  if (start < 0) return `${readme.trimEnd()}\n\n${section}`;
  const next = readme.slice(start + HEADING.length).search(/\n## /);
  const end = next < 0 ? readme.length : start + HEADING.length + next + 1;
  return `${readme.slice(0, start)}${section}${end < readme.length ? `\n${readme.slice(end)}` : ''}`;
}

t.test('the README section matches the settings, endpoints and metrics', async (t) => {
  const section = renderSection();
  const readme = readFileSync(readmePath, 'utf8');
  if (process.env.DIFY_GUARD_UPDATE_README === '1') writeFileSync(readmePath, withSection(readme, section));
  const current = readFileSync(readmePath, 'utf8');
  t.equal(withSection(current, section), current, 'README.md is up to date (see the comment at the top of this file)');
  for (const key of SETTING_KEYS)
    t.match(
      current,
      `\`${SETTINGS[key].env}\` | \`${String(SETTINGS[key].default)}\``,
      `${SETTINGS[key].env} documented with its default`,
    );
  for (const metric of Object.values(METRIC_SPECS)) t.match(current, `\`${metric.name}\``, `${metric.name} documented`);
  for (const path of [
    '/healthz',
    '/readyz',
    '/metrics',
    contract.webhook.mutatePodsPath,
    contract.webhook.validateSecretsPath,
  ]) {
    t.match(current, `${path}\``, `${path} documented`);
  }
});

t.test('replacing the section leaves the rest of the README alone', async (t) => {
  const before = '# x\n\nintro\n\n';
  const after = '## Later section\n\ntext\n';
  t.equal(withSection(`${before}${HEADING}\n\nold\n\n${after}`, 'NEW\n'), `${before}NEW\n\n${after}`);
  t.equal(withSection('# x\n', 'NEW\n'), '# x\n\nNEW\n');
  t.equal(withSection(`# x\n\n${HEADING}\n\nold\n`, 'NEW\n'), '# x\n\nNEW\n');
});
