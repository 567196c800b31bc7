// Sends one AdmissionReview to a running dify-guard over HTTPS and checks the answer (smoke.sh).
//   unrelated  an UPDATE of a Secret dify-guard does not guard: allowed, uid echoed
//   unsynced   a password change of a release's PostgreSQL Secret while the PVC cache cannot sync:
//              denied with reason PvcStateUnknown, and neither password appears in the answer
// Names come from chart/files/contract.json; the passwords are random and never printed.
// Usage: node smoke-review.mjs MODE HTTPS_PORT CA_FILE
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';

const [mode, port, caFile] = process.argv.slice(2);
const contract = JSON.parse(readFileSync(new URL('../../chart/files/contract.json', import.meta.url), 'utf8'));
const release = 'smoke';
const namespace = 'smoke';
const expand = (template) => template.replaceAll('{release}', release);

function secret(name, labels, password) {
  const data =
    password === undefined
      ? {}
      : Object.fromEntries(
          [contract.secretKeys.postgresPassword, contract.secretKeys.password].map((key) => [
            key,
            password.toString('base64'),
          ]),
        );
  return { apiVersion: 'v1', kind: 'Secret', metadata: { name, namespace, labels }, type: 'Opaque', data };
}

function review(oldSecret, newSecret) {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: randomUUID(),
      kind: { group: '', version: 'v1', kind: 'Secret' },
      resource: { group: '', version: 'v1', resource: 'secrets' },
      operation: 'UPDATE',
      name: newSecret.metadata.name,
      namespace,
      userInfo: { username: 'smoke-test', groups: ['system:authenticated'] },
      object: newSecret,
      oldObject: oldSecret,
      dryRun: false,
    },
  };
}

function post(body) {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = request(
      {
        host: '127.0.0.1',
        port: Number(port),
        servername: 'localhost',
        ca: readFileSync(caFile),
        path: contract.webhook.validateSecretsPath,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        timeout: 10_000,
      },
      (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end(payload);
  });
}

const fail = (why) => {
  console.log(why);
  process.exit(1);
};

if (mode === 'unrelated') {
  const body = review(secret('smoke-unrelated', {}), {
    ...secret('smoke-unrelated', {}),
    metadata: { name: 'smoke-unrelated', namespace, annotations: { touched: 'yes' } },
  });
  const { status, text } = await post(body);
  const answer = JSON.parse(text);
  console.log(`HTTP ${status}, allowed ${answer.response?.allowed}`);
  if (status !== 200 || answer.response?.allowed !== true || answer.response?.uid !== body.request.uid)
    fail('want HTTP 200, allowed true, the request uid echoed');
} else if (mode === 'unsynced') {
  const labels = {
    [contract.labels.name]: contract.values.difyName,
    [contract.labels.component]: contract.components.postgresql,
    [contract.labels.instance]: release,
  };
  const name = expand(contract.names.postgresqlSecret);
  const [before, after] = [randomBytes(18), randomBytes(18)];
  const { status, text } = await post(review(secret(name, labels, before), secret(name, labels, after)));
  const response = JSON.parse(text).response ?? {};
  console.log(
    `HTTP ${status}, allowed ${response.allowed}, code ${response.status?.code}, reason ${response.auditAnnotations?.reason}`,
  );
  const leaked = [before, after].some((p) =>
    [p.toString('base64'), p.toString('hex'), p.toString('latin1')].some((form) => text.includes(form)),
  );
  if (leaked) fail('the answer contains a password');
  if (
    status !== 200 ||
    response.allowed !== false ||
    response.status?.code !== 403 ||
    response.auditAnnotations?.reason !== 'PvcStateUnknown'
  ) {
    fail(
      `want HTTP 200, allowed false, code 403, reason PvcStateUnknown; message: ${response.status?.message ?? text.slice(0, 300)}`,
    );
  }
  if (!response.status.message.includes(expand(contract.names.postgresqlPvc)))
    fail('the message does not name the PVC');
} else {
  fail(`unknown mode '${mode}'`);
}
