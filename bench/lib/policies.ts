// The in-process equivalents of dify-guard that the API-server view compares it with: a
// ValidatingAdmissionPolicy whose parameter is the PostgreSQL PVC (it refuses a password change
// while that PVC exists) and a MutatingAdmissionPolicy (JSONPatch written in CEL) applying the
// pod env rules. Every name comes from the contract. Scope: bindings select one namespace only.
// Known gaps against dify-guard: one binding serves one release (paramRef names that release's
// PVC); no redis-secret annotations; no Warning Event or log line on a refusal (the VAP's Audit
// action leaves an audit annotation only); app-container env order differs (the three references
// go first, so REDIS_PASSWORD precedes its users). Init containers get corrections only, as in
// dify-guard. The bench checks the stored pods of both for the same env entries.
import { ENV, LABELS, SECRET_KEYS, contract, expandName } from '../../src/contract.js';
import type { Json } from '../../harness/kube-rest.js';

const q = (text: string): string => JSON.stringify(text);
const list = (items: readonly string[]): string => `[${items.map(q).join(', ')}]`;
const RELEASE = '{release}';
// A name template as a CEL expression of `release` (a CEL expression too), e.g. variables.release + "-postgresql".
const templateCel = (template: string, release = 'variables.release'): string =>
  template
    .split(RELEASE)
    .map((part, index) => (index === 0 ? (part ? q(part) : '') : `${release}${part ? ` + ${q(part)}` : ''}`))
    .filter(Boolean)
    .join(' + ');

/** An admissionregistration.k8s.io/v1 object: a policy or a binding. */
const admissionObject = (kind: string, name: string, spec: Json): Json => ({
  apiVersion: 'admissionregistration.k8s.io/v1',
  kind,
  metadata: { name },
  spec,
});
/** A policy's matchConstraints: one operation on one core/v1 resource, objects chosen by `objectSelector`. */
const coreRequests = (operation: string, resource: string, objectSelector: Json): Json => ({
  resourceRules: [{ apiGroups: [''], apiVersions: ['v1'], operations: [operation], resources: [resource] }],
  objectSelector,
});
/** CEL: `object` (object or oldObject) carries the release label. */
const hasReleaseLabel = (object: string): string =>
  `has(${object}.metadata.labels) && ${q(LABELS.instance)} in ${object}.metadata.labels`;
/** A binding's matchResources: the one namespace the bench uses. */
const inNamespace = (namespace: string): Json => ({
  namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': namespace } },
});

export const POLICY_NAMES = {
  secretGuard: 'bench-postgresql-password-guard',
  podEnv: 'bench-dify-pod-env',
} as const;

const literalPassword = '^[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/]*:[^@$][^@]*@';
// A broker URL with a literal password, which gets $(REDIS_PASSWORD) instead.
const brokerToFix = `e.name == ${q(ENV.celeryBrokerUrl)} && has(e.value) && e.value.matches(${q(literalPassword)})`;

/** CEL for container c of `containers` (absent entries added) or `initContainers` (corrections only): its new env. */
function envExpression(field: 'containers' | 'initContainers'): string {
  const type = `Object.spec.${field}.env`;
  const ref = (secret: string, key: string): string =>
    `${type}.valueFrom{secretKeyRef: ${type}.valueFrom.secretKeyRef{name: ${secret}, key: ${key}}}`;
  const dbRef = ref(templateCel(contract.names.postgresqlSecret), q(SECRET_KEYS.postgresPassword));
  const redisRef = ref(templateCel(contract.names.redisSecret), q(SECRET_KEYS.redisPassword));
  const brokerValue = `${type}{name: e.name, value: e.value.replace(e.value.find(":[^:@/]+@"), ":$(${ENV.redisPassword})@")}`;
  if (field === 'initContainers') {
    // Corrections only: one replace per entry to fix (a list mixing stored and built entries makes
    // kube-apiserver v1.36.3 panic converting it, in cel-go's baseList.ConvertToNative).
    return (
      `e.name == ${q(ENV.migrationEnabled)} ? ${type}{name: e.name, value: "false"} : ` +
      `e.name == ${q(ENV.dbPassword)} ? ${type}{name: e.name, valueFrom: ${dbRef}} : ` +
      `e.name == ${q(ENV.redisPassword)} ? ${type}{name: e.name, valueFrom: ${redisRef}} : ${brokerValue}`
    );
  }
  const replaced = list([ENV.migrationEnabled, ENV.dbPassword, ENV.redisPassword]);
  const has = (name: string): string => `(has(c.env) && c.env.exists(e, e.name == ${q(name)}))`;
  return [
    `(variables.forceMigration ? [${type}{name: ${q(ENV.migrationEnabled)}, value: "false"}] : [])`,
    `[${type}{name: ${q(ENV.dbPassword)}, valueFrom: ${dbRef}}]`,
    `(variables.redisAuth ? [${type}{name: ${q(ENV.redisPassword)}, valueFrom: ${redisRef}}] : [])`,
    // Everything else in order (the three references above go first, so REDIS_PASSWORD precedes its users).
    `(has(c.env) ? c.env.filter(e, !(e.name in ${replaced}) || (e.name == ${q(ENV.migrationEnabled)} && !variables.forceMigration))` +
      `.map(e, ${brokerToFix} ? ${brokerValue} : e) : [])`,
    `(${has(ENV.redisHost)} ? [] : [${type}{name: ${q(ENV.redisHost)}, value: ${templateCel(contract.names.redisMaster)}}])`,
    `(${has(ENV.redisPort)} ? [] : [${type}{name: ${q(ENV.redisPort)}, value: ${q(String(contract.redisPort))}}])`,
  ].join(' + ');
}

/** The init-container env entries dify-guard corrects (it adds none to init containers). */
const initEntryToFix =
  `(e.name == ${q(ENV.migrationEnabled)} && variables.forceMigration) || e.name == ${q(ENV.dbPassword)} || ` +
  `e.name == ${q(ENV.redisPassword)} || (${brokerToFix})`;

/** As dify-guard's default image list: only the Dify containers are treated (a sidecar is left as sent). */
const DIFY_IMAGE = `(has(c.image) && (c.image.contains("langgenius/dify-api") || c.image.contains("langgenius/dify-plugin-daemon")))`;

function patchesFor(field: 'containers' | 'initContainers'): string {
  if (field === 'containers') {
    return (
      `object.spec.containers.filter(c, ${DIFY_IMAGE}).map(c, JSONPatch{op: "add", ` +
      `path: "/spec/containers/" + string(object.spec.containers.indexOf(c)) + "/env", value: ${envExpression(field)}})`
    );
  }
  return (
    `(has(object.spec.initContainers) ? object.spec.initContainers.filter(c, has(c.env)).map(c, ` +
    `c.env.filter(e, ${initEntryToFix}).map(e, JSONPatch{op: "replace", ` +
    `path: "/spec/initContainers/" + string(object.spec.initContainers.indexOf(c)) + "/env/" + string(c.env.indexOf(e)), ` +
    `value: ${envExpression(field)}})).flatten() : [])`
  );
}

const anyEnv = (field: 'containers' | 'initContainers', test: string): string =>
  `(has(object.spec.${field}) && object.spec.${field}.exists(c, has(c.env) && c.env.exists(e, ${test})))`;

/** Matches what the bench's namespace holds: Dify pods of the credential-injecting components. */
export function podEnvPolicy(): Json {
  const brokerUrlWithPassword = `has(e.value) && e.value.matches(${q(literalPassword.replace('[^@$]', '[^@]'))})`;
  const redisUsed = `e.name == ${q(ENV.redisPassword)} || (e.name == ${q(ENV.celeryBrokerUrl)} && ${brokerUrlWithPassword})`;
  return admissionObject('MutatingAdmissionPolicy', POLICY_NAMES.podEnv, {
    failurePolicy: 'Fail',
    reinvocationPolicy: 'IfNeeded',
    matchConstraints: coreRequests('CREATE', 'pods', {
      matchLabels: { [LABELS.name]: contract.values.difyName },
      matchExpressions: [{ key: LABELS.component, operator: 'In', values: contract.podRules.injectCredentials }],
    }),
    matchConditions: [{ name: 'has-release', expression: hasReleaseLabel('object') }],
    variables: [
      { name: 'release', expression: `object.metadata.labels[${q(LABELS.instance)}]` },
      {
        name: 'forceMigration',
        expression: `object.metadata.labels[${q(LABELS.component)}] in ${list(contract.podRules.forceMigrationDisabled)}`,
      },
      {
        name: 'redisAuth',
        expression: `${anyEnv('containers', redisUsed)} || ${anyEnv('initContainers', redisUsed)}`,
      },
    ],
    mutations: [
      {
        patchType: 'JSONPatch',
        jsonPatch: { expression: `${patchesFor('containers')} + ${patchesFor('initContainers')}` },
      },
    ],
  });
}

export function podEnvBinding(namespace: string): Json {
  return admissionObject('MutatingAdmissionPolicyBinding', POLICY_NAMES.podEnv, {
    policyName: POLICY_NAMES.podEnv,
    matchResources: inNamespace(namespace),
  });
}

/** A ValidatingAdmissionPolicy (Kubernetes docs, parameter resources): paramKind PersistentVolumeClaim, parameterNotFoundAction Allow. */
export function secretGuardPolicy(): Json {
  const secretName = templateCel(contract.names.postgresqlSecret, `oldObject.metadata.labels[${q(LABELS.instance)}]`);
  const same = (key: string): string => `object.?data[?${q(key)}] == oldObject.?data[?${q(key)}]`;
  return admissionObject('ValidatingAdmissionPolicy', POLICY_NAMES.secretGuard, {
    failurePolicy: 'Fail',
    paramKind: { apiVersion: 'v1', kind: 'PersistentVolumeClaim' },
    matchConstraints: coreRequests('UPDATE', 'secrets', {
      matchLabels: { [LABELS.name]: contract.values.difyName, [LABELS.component]: contract.components.postgresql },
    }),
    matchConditions: [
      {
        name: 'release-postgresql-secret',
        expression: `${hasReleaseLabel('oldObject')} && oldObject.metadata.name == ${secretName}`,
      },
    ],
    validations: [
      {
        expression: `${same(SECRET_KEYS.postgresPassword)} && ${same(SECRET_KEYS.password)}`,
        messageExpression:
          '"the PostgreSQL password cannot change while PersistentVolumeClaim " + ' +
          'params.metadata.namespace + "/" + params.metadata.name + " exists"',
        reason: 'Forbidden',
      },
    ],
  });
}

export function secretGuardBinding(namespace: string, release: string): Json {
  return admissionObject('ValidatingAdmissionPolicyBinding', POLICY_NAMES.secretGuard, {
    policyName: POLICY_NAMES.secretGuard,
    validationActions: ['Deny', 'Audit'],
    paramRef: { name: expandName(contract.names.postgresqlPvc, release), parameterNotFoundAction: 'Allow' },
    matchResources: inNamespace(namespace),
  });
}

export const ADMISSION_PATHS = {
  ValidatingAdmissionPolicy: '/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies',
  ValidatingAdmissionPolicyBinding: '/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings',
  MutatingAdmissionPolicy: '/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicies',
  MutatingAdmissionPolicyBinding: '/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicybindings',
} as const;
