// The pod template rules: which workloads are checked, what is found (names only), warn or deny,
// controllers' own writes skipped, and the last-applied annotation of a pod.
import t from 'tap';
import { ENV, contract } from '../../src/contract.js';
import { MAX_WARNING_LENGTH } from '../../src/admission/messages.js';
import { defaultGuardSettings } from '../../src/admission/settings.js';
import {
  TEMPLATE_PATHS,
  judgeWorkloadTemplate,
  lastAppliedFindings,
  podTemplateOf,
  templateFindings,
} from '../../src/admission/template-check.js';
import type { JsonObject } from '../../src/admission/types.js';
import { loadObject, loadReview, sensitiveStringsOf } from '../../harness/fixtures.js';
import { testSecret } from '../../harness/secrets.js';

const settings = defaultGuardSettings;
const deny = { ...settings, templatePolicy: 'deny' as const };
const deployment = (): JsonObject => loadObject('deployment-community-literal');
const template = (object: JsonObject): JsonObject => podTemplateOf('Deployment', object) as JsonObject;
const apiEnv = (object: JsonObject): { name: string; value?: string; valueFrom?: unknown }[] =>
  (((template(object).spec as JsonObject).containers as JsonObject[])[0] as JsonObject).env as {
    name: string;
    value?: string;
  }[];
const secrets = sensitiveStringsOf(loadReview('deployment-community-literal'));

/** The same template under each workload kind, at the path that kind keeps it. */
function asKind(kind: string, podTemplate: JsonObject): JsonObject {
  const path = TEMPLATE_PATHS[kind] as readonly string[];
  const object: JsonObject = {
    apiVersion: 'x',
    kind,
    metadata: { name: `n-${kind.toLowerCase()}`, namespace: 'dify' },
  };
  let node = object;
  path.slice(0, -1).forEach((field) => {
    node[field] = {};
    node = node[field] as JsonObject;
  });
  node[path[path.length - 1] as string] = podTemplate;
  return object;
}

t.test('a Deployment with a literal DB_PASSWORD, PGVECTOR_PASSWORD and MIGRATION_ENABLED "true"', async (t) => {
  const decision = judgeWorkloadTemplate('Deployment', deployment(), settings);
  t.equal(decision.allowed, true, 'warn mode: allowed');
  t.strictSame(decision.findings, [
    { container: 'api', variable: ENV.migrationEnabled, finding: 'migration_enabled' },
    { container: 'api', variable: ENV.dbPassword, finding: 'literal_password' },
    { container: 'api', variable: 'PGVECTOR_PASSWORD', finding: 'literal_password' },
  ]);
  t.equal(decision.warnings.length, 2, 'one warning per finding kind');
  t.match(decision.warnings[0], /DB_PASSWORD, PGVECTOR_PASSWORD as literal; use valueFrom\.secretKeyRef/);
  t.match(decision.warnings[1], /MIGRATION_ENABLED other than "false"/);
  for (const w of decision.warnings) t.ok(w.length <= MAX_WARNING_LENGTH && !w.endsWith('…'), `fits: ${w}`);
  t.ok(secrets.length >= 2, 'the scan looks for the literal');
  for (const s of secrets) t.notOk(JSON.stringify(decision).includes(s), 'no password in the decision');
});

t.test('deny mode: refused, saying what, why and what to do, with no value', async (t) => {
  const decision = judgeWorkloadTemplate('Deployment', deployment(), deny);
  t.equal(decision.allowed, false);
  t.match(decision.message, /^Deployment community-dify-api: refused by dify-guard \(webhook\.templatePolicy=deny\)/);
  t.match(decision.message, /DB_PASSWORD, PGVECTOR_PASSWORD as a literal password/);
  t.match(decision.message, /valueFrom\.secretKeyRef/);
  for (const s of secrets) t.notOk(JSON.stringify(decision).includes(s), 'no password in the refusal');
});

t.test(
  'deny mode: an UPDATE that leaves the template as it was is only warned; an object being deleted is skipped',
  async (t) => {
    const old = deployment();
    const relabelled = deployment();
    ((relabelled.metadata as JsonObject).labels as JsonObject).team = 'ai';
    const decision = judgeWorkloadTemplate('Deployment', relabelled, deny, old);
    t.match(
      decision,
      { allowed: true, mode: 'warn' },
      'a label change (or the garbage collector removing a finalizer) goes through',
    );
    t.equal(decision.warnings.length, 2, 'still warned');
    const edited = deployment();
    apiEnv(edited).push({ name: 'LOG_LEVEL', value: 'DEBUG' });
    t.match(
      judgeWorkloadTemplate('Deployment', edited, deny, old),
      { allowed: false, mode: 'deny' },
      'a template change is refused',
    );
    const deleting = deployment();
    (deleting.metadata as JsonObject).deletionTimestamp = '2026-12-02T19:00:00Z';
    t.strictSame(judgeWorkloadTemplate('Deployment', deleting, deny, old).findings, [], 'being deleted: not checked');
  },
);

t.test('every workload kind, at its own template path', async (t) => {
  for (const kind of Object.keys(TEMPLATE_PATHS)) {
    const decision = judgeWorkloadTemplate(kind, asKind(kind, template(deployment())), settings);
    t.equal(decision.findings.length, 3, kind);
  }
  t.strictSame(judgeWorkloadTemplate('Pod', deployment(), settings).findings, [], 'another kind: not checked here');
});

t.test('nothing to say', async (t) => {
  t.test('references and MIGRATION_ENABLED "false"', async (t) => {
    const object = deployment();
    const env = apiEnv(object);
    for (const e of env) {
      if (e.name === ENV.migrationEnabled) e.value = 'false';
      if (e.name !== ENV.dbPassword && e.name !== 'PGVECTOR_PASSWORD') continue;
      delete e.value;
      e.valueFrom = { secretKeyRef: { name: 'x', key: 'y' } };
    }
    t.strictSame(judgeWorkloadTemplate('Deployment', object, deny), {
      allowed: true,
      mode: 'deny',
      findings: [],
      warnings: [],
    });
  });
  t.test('an empty literal and a broker URL without a password or with $(REDIS_PASSWORD)', async (t) => {
    const object = deployment();
    const env = apiEnv(object);
    env.splice(
      0,
      env.length,
      { name: ENV.redisPassword, value: '' },
      { name: ENV.celeryBrokerUrl, value: 'redis://:$(REDIS_PASSWORD)@r:6379/1' },
      { name: 'PUBSUB_REDIS_URL', value: 'redis://r:6379/2' },
    );
    t.strictSame(templateFindings(template(object), settings), []);
  });
  t.test('a non-Dify workload with the same literals', async (t) => {
    const object = deployment();
    for (const c of (template(object).spec as JsonObject).containers as JsonObject[]) {
      c.image = 'example.com/shop-api:2';
      c.env = ((c.env as { name: string }[] | undefined) ?? []).filter(
        (e) => !contract.difyOnlySettings.includes(e.name),
      );
    }
    t.ok(
      apiEnv(object).some((e) => e.name === ENV.dbPassword && e.value),
      'the literal is still there',
    );
    t.strictSame(judgeWorkloadTemplate('Deployment', object, deny).findings, []);
  });
  t.test("the sidecar's literal is not Dify's business", async (t) => {
    const object = deployment();
    const containers = (template(object).spec as JsonObject).containers as JsonObject[];
    containers.splice(0, 1);
    (containers[0] as JsonObject).env = [{ name: 'SHIPPER_PASSWORD', value: 'x' }];
    t.strictSame(judgeWorkloadTemplate('Deployment', object, deny).findings, []);
  });
  t.test("this chart's migration Job keeps its MIGRATION_ENABLED; its web pods are not checked", async (t) => {
    const migration = template(deployment());
    (migration.metadata as JsonObject).labels = {
      [contract.labels.name]: contract.values.difyName,
      [contract.labels.component]: contract.components.migration,
    };
    t.strictSame(
      templateFindings(migration, settings).map((f) => f.finding),
      ['literal_password', 'literal_password'],
    );
    (migration.metadata as JsonObject).labels = {
      [contract.labels.name]: contract.values.difyName,
      [contract.labels.component]: contract.components.web,
    };
    t.strictSame(templateFindings(migration, settings), []);
  });
});

t.test("controllers' own writes are not checked again (no warning storm)", async (t) => {
  for (const [kind, owner] of [
    ['ReplicaSet', 'Deployment'],
    ['Job', 'CronJob'],
    ['Deployment', 'SomeOperatorKind'],
  ]) {
    const object = asKind(kind as string, template(deployment()));
    (object.metadata as JsonObject).ownerReferences = [
      { apiVersion: 'x', kind: owner, name: 'o', uid: 'u', controller: true },
    ];
    const decision = judgeWorkloadTemplate(kind as string, object, deny);
    t.strictSame(decision, { allowed: true, mode: 'deny', findings: [], warnings: [] }, `${kind} of a ${owner}`);
  }
  const notController = asKind('ReplicaSet', template(deployment()));
  (notController.metadata as JsonObject).ownerReferences = [{ apiVersion: 'x', kind: 'Thing', name: 'o', uid: 'u' }];
  t.equal(
    judgeWorkloadTemplate('ReplicaSet', notController, settings).findings.length,
    3,
    'an owner that is not the controller',
  );
});

t.test("a pod's last-applied-configuration annotation", async (t) => {
  const applied = (containers: JsonObject[]): JsonObject => {
    const manifest = JSON.stringify({ apiVersion: 'v1', kind: 'Pod', spec: { containers } });
    const metadata = { name: 'p', annotations: { [contract.annotations.lastApplied]: manifest } };
    return { apiVersion: 'v1', kind: 'Pod', metadata, spec: { containers } };
  };
  const literal = testSecret();
  const dify = {
    name: 'api',
    image: 'langgenius/dify-api:1.11.4',
    env: [
      { name: ENV.dbPassword, value: literal },
      { name: ENV.migrationEnabled, value: 'true' },
    ],
  };
  const result = lastAppliedFindings(applied([dify]), settings);
  t.strictSame(
    result.findings,
    [{ container: 'api', variable: ENV.dbPassword, finding: 'literal_password' }],
    'literal passwords only',
  );
  t.equal(result.warnings.length, 1);
  t.match(result.warnings[0], /last-applied-configuration stores DB_PASSWORD as literal/);
  t.notOk(JSON.stringify(result).includes(literal));
  const owned = applied([dify]);
  (owned.metadata as JsonObject).ownerReferences = [{ kind: 'ReplicaSet', name: 'r', uid: 'u', controller: true }];
  t.strictSame(lastAppliedFindings(owned, settings).findings, [], 'a controller-owned pod: skipped');
  const broken = applied([dify]);
  ((broken.metadata as JsonObject).annotations as JsonObject)[contract.annotations.lastApplied] = '{not json';
  t.strictSame(lastAppliedFindings(broken, settings).findings, [], 'an annotation that is not JSON');
  t.strictSame(lastAppliedFindings(loadObject('pod-api'), settings).findings, [], 'no annotation');
});
