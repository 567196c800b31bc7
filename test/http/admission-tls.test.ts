// The admission routes over real TLS on loopback, as the API server calls them: uid echo, every bad
// input answered 4xx with a message naming the problem, a handler fault answered 500 with the uid,
// TLS 1.2 minimum.
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { connect, createServer as createTlsServer } from 'node:tls';
import { contract } from '../../src/contract.js';
import {
  captureAudit,
  captureLog,
  FakePvcCache,
  generateCerts,
  answerOf,
  httpsRequest,
  PASSWORD_CHANGE_REFUSED,
  postReview,
  REMOVE,
  reviewOf,
  startServer,
  tempDir,
  withEdits,
  type HttpsResponse,
} from '../server/support.js';
import { loadReview, sensitiveStringsOf } from '../../harness/fixtures.js';

const { mutatePodsPath, validateSecretsPath } = contract.webhook;
const BODY_LIMIT = 64 * 1024;

t.test('admission over HTTPS', async (t) => {
  const certs = generateCerts(tempDir(t));
  const ca = readFileSync(certs.caFile);
  const captured = captureLog();
  const pvcCache = new FakePvcCache(['dify/data-dify-postgresql-0']);
  const audit = captureAudit();
  const { port } = await startServer(t, {
    log: captured.log,
    pvcCache,
    audit,
    bodyLimitBytes: BODY_LIMIT,
    tls: { certFile: certs.certFile, keyFile: certs.keyFile },
  });
  const post = (path: string, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
    httpsRequest({ port, path, ca, body, headers });

  t.test('every route echoes request.uid in an admission.k8s.io/v1 AdmissionReview', async (t) => {
    for (const [path, fixture] of [
      [mutatePodsPath, 'pod-api'],
      [mutatePodsPath, 'pod-web'],
      [validateSecretsPath, 'secret-postgresql-update-unchanged'],
    ] as const) {
      const review = loadReview(fixture);
      review.request.uid = `uid-${fixture}`;
      const res = await postReview(port, path, ca, review);
      t.equal(res.status, 200, `${fixture}: HTTP 200`);
      const answer = reviewOf(res.json);
      t.equal(answer?.apiVersion, 'admission.k8s.io/v1');
      t.equal(answer?.kind, 'AdmissionReview');
      t.equal(answer?.response.uid, `uid-${fixture}`, `${fixture}: uid echoed`);
      t.equal(answer?.response.allowed, true);
    }
  });

  t.test('a Pod CREATE that needs changes gets a base64 JSONPatch', async (t) => {
    const res = await postReview(port, mutatePodsPath, ca, loadReview('pod-api-literal'));
    t.equal(answerOf(res).patchType, 'JSONPatch');
    const patch = JSON.parse(Buffer.from(answerOf(res).patch ?? '', 'base64').toString('utf8')) as {
      op: string;
      path: string;
    }[];
    t.ok(Array.isArray(patch) && patch.length > 0, 'a non-empty RFC 6902 array');
    t.ok(
      patch.every((op) => typeof op.op === 'string' && op.path.startsWith('/spec/')),
      'operations on the pod spec',
    );
  });

  t.test('no patch and no patchType when nothing changes (non-Dify pod, pod UPDATE)', async (t) => {
    const nonDify = await postReview(port, mutatePodsPath, ca, loadReview('pod-non-dify'));
    t.notOk('patch' in answerOf(nonDify));
    t.notOk('patchType' in answerOf(nonDify));
    const update = loadReview('pod-api-literal');
    update.request.operation = 'UPDATE';
    update.request.oldObject = update.request.object ?? null;
    const res = await postReview(port, mutatePodsPath, ca, update);
    t.same(answerOf(res), { uid: update.request.uid, allowed: true }, 'UPDATE is allowed unchanged');
  });

  t.test('a password change under the PVC: 403 Forbidden, message, audit annotations, audit record', async (t) => {
    const review = loadReview('secret-postgresql-update-password');
    const res = await postReview(port, validateSecretsPath, ca, review);
    t.equal(res.status, 200, 'a denial is still HTTP 200');
    const response = answerOf(res);
    t.equal(response.uid, review.request.uid);
    t.equal(response.allowed, false);
    t.equal(response.status?.code, 403);
    t.equal(response.status?.reason, 'Forbidden');
    t.match(response.status?.message, 'data-dify-postgresql-0');
    t.same(response.auditAnnotations, {
      decision: 'denied',
      reason: 'PasswordChangeUnderPvc',
      pvc: 'dify/data-dify-postgresql-0',
    });
    const record = audit.records.at(-1);
    t.match(record, {
      ...PASSWORD_CHANGE_REFUSED,
      uid: review.request.uid,
      user: review.request.userInfo.username,
    });
  });

  t.test('a DELETE under the PVC is allowed with a warning and audited', async (t) => {
    const review = loadReview('secret-postgresql-delete');
    const before = audit.records.length;
    const res = await postReview(port, validateSecretsPath, ca, review);
    t.equal(answerOf(res).allowed, true);
    t.ok((answerOf(res).warnings ?? []).length > 0, 'warnings');
    t.equal(answerOf(res).auditAnnotations?.reason, 'DeleteUnderPvc');
    t.equal(audit.records.length, before + 1);
    t.equal(audit.records.at(-1)?.decision, 'allowed');
  });

  t.test('bad input: 4xx with a message that names the problem', async (t) => {
    const good = loadReview('pod-api');
    const variant = (...edits: [path: string, to: unknown][]): string => JSON.stringify(withEdits(good, ...edits));
    const cases: {
      name: string;
      status: number;
      message: RegExp;
      send: () => ReturnType<typeof post>;
      uid?: string;
    }[] = [
      {
        name: 'malformed JSON',
        status: 400,
        message: /malformed JSON/,
        send: () => post(mutatePodsPath, '{"apiVersion": "admission.k8s.io/v1", "kind": '),
      },
      {
        name: 'wrong content type',
        status: 415,
        message: /expected application\/json, got Content-Type "text\/plain"/,
        send: () => post(mutatePodsPath, JSON.stringify(good), { 'content-type': 'text/plain' }),
      },
      {
        name: 'another wrong content type',
        status: 415,
        message: /expected application\/json, got Content-Type "application\/xml"/,
        send: () => post(mutatePodsPath, '<review/>', { 'content-type': 'application/xml' }),
      },
      {
        name: 'no content type',
        status: 415,
        message: /expected application\/json, got no Content-Type header/,
        send: () => post(mutatePodsPath, JSON.stringify(good), {}),
      },
      { name: 'empty body', status: 400, message: /request body is empty/, send: () => post(mutatePodsPath, '') },
      {
        name: 'wrong apiVersion',
        status: 400,
        message: /apiVersion must be "admission\.k8s\.io\/v1", got "admission\.k8s\.io\/v1beta1"/,
        uid: good.request.uid,
        send: () => post(mutatePodsPath, variant(['apiVersion', 'admission.k8s.io/v1beta1'])),
      },
      {
        name: 'wrong kind',
        status: 400,
        message: /kind must be "AdmissionReview", got "Pod"/,
        uid: good.request.uid,
        send: () => post(validateSecretsPath, variant(['kind', 'Pod'])),
      },
      {
        name: 'missing request.uid',
        status: 400,
        message: /request\.uid is missing/,
        send: () => post(mutatePodsPath, variant(['request.uid', REMOVE])),
      },
      {
        name: 'empty request.uid',
        status: 400,
        message: /request\.uid must not be empty/,
        send: () => post(mutatePodsPath, variant(['request.uid', ''])),
      },
      {
        name: 'missing request',
        status: 400,
        message: /request is missing/,
        send: () => post(validateSecretsPath, variant(['request', REMOVE])),
      },
      {
        name: 'request not an object',
        status: 400,
        message: /request must be an object, got a string/,
        send: () => post(validateSecretsPath, variant(['request', 'x'])),
      },
      {
        name: 'unknown operation',
        status: 400,
        message: /request\.operation must be one of CREATE, UPDATE, DELETE, CONNECT, got "PATCH"/,
        uid: good.request.uid,
        send: () => post(mutatePodsPath, variant(['request.operation', 'PATCH'])),
      },
      {
        name: 'a JSON array',
        status: 400,
        message: /the body must be an object, got an array/,
        send: () => post(mutatePodsPath, '[]'),
      },
      {
        name: 'body over the limit',
        status: 413,
        message: new RegExp(`larger than the limit of ${BODY_LIMIT} bytes`),
        send: () =>
          post(mutatePodsPath, variant(['request.object.metadata.annotations', { pad: 'x'.repeat(BODY_LIMIT) }])),
      },
      {
        name: 'body over the limit, chunked without Content-Length',
        status: 413,
        message: /larger than the limit/,
        send: () =>
          httpsRequest({
            port,
            path: mutatePodsPath,
            ca,
            headers: { 'content-type': 'application/json' },
            chunks: [Buffer.from('{"pad":"'), Buffer.alloc(BODY_LIMIT, 'x'), Buffer.from('"}')],
          }),
      },
    ];
    for (const c of cases) checkRejection(t, c, await c.send());
  });

  t.test('malformed JSON is never quoted back or logged', async (t) => {
    const secretish = 'Sup3r-Secret-Value-77f1';
    const res = await post(
      validateSecretsPath,
      `{"request": {"uid": "u", "object": {"data": {"password": ${secretish}}}}}`,
    );
    t.equal(res.status, 400);
    t.notMatch(res.text, secretish);
    t.notMatch(captured.text(), secretish);
  });

  t.test('a fault inside a handler: 500, uid echoed, logged without the request content', async (t) => {
    pvcCache.state = () => {
      throw new TypeError('cache exploded while reading Old-Pg-Pass-in-message');
    };
    t.teardown(() => {
      pvcCache.state = FakePvcCache.prototype.state;
    });
    const review = loadReview('secret-postgresql-update-password');
    const res = await postReview(port, validateSecretsPath, ca, review);
    t.equal(res.status, 500);
    t.equal(answerOf(res).uid, review.request.uid);
    t.equal(answerOf(res).allowed, false);
    t.equal(answerOf(res).status?.code, 500);
    t.match(answerOf(res).status?.message, review.request.uid);
    const line = captured.lines().find((l) => l.msg === 'admission handler failed');
    t.match(line, { uid: review.request.uid, route: validateSecretsPath, fault: { type: 'TypeError' } });
    t.notMatch(captured.text(), 'Old-Pg-Pass-in-message', 'the fault message is not logged');
    for (const secret of sensitiveStringsOf(review)) t.notMatch(captured.text(), secret);
  });

  t.test('an audit sink that throws does not change the decision', async (t) => {
    const record = audit.record;
    audit.record = () => {
      throw new Error('disk full');
    };
    t.teardown(() => {
      audit.record = record;
    });
    const review = loadReview('secret-postgresql-update-password');
    const res = await postReview(port, validateSecretsPath, ca, review);
    t.equal(res.status, 200);
    t.equal(answerOf(res).allowed, false);
    t.equal(answerOf(res).status?.code, 403);
    t.match(
      captured.lines().find((l) => l.msg === 'audit record could not be written'),
      { uid: review.request.uid, fault: { type: 'Error' } },
    );
  });

  t.test('an unknown path is 404 and does not reach a handler', async (t) => {
    const res = await postReview(port, '/mutate/secrets', ca, loadReview('pod-api'));
    t.equal(res.status, 404);
  });

  t.test('TLS: 1.2 accepted, 1.1 and 1.0 refused by the server', async (t) => {
    type Version = 'TLSv1' | 'TLSv1.1' | 'TLSv1.2';
    const handshake = (minVersion: Version, maxVersion: Version, serverPort = port) =>
      new Promise<string>((resolve, reject) => {
        // SECLEVEL=0 lets this client offer old versions, so a refusal can only come from the server.
        const socket = connect(
          {
            host: '127.0.0.1',
            servername: 'localhost',
            port: serverPort,
            ca,
            minVersion,
            maxVersion,
            ciphers: 'DEFAULT@SECLEVEL=0',
          },
          () => {
            const protocol = socket.getProtocol() ?? '';
            socket.end();
            resolve(protocol);
          },
        );
        socket.on('error', reject);
      });
    // Control: the same client does get TLS 1.1 from a server that allows it.
    const permissive = createTlsServer({
      cert: readFileSync(certs.certFile),
      key: readFileSync(certs.keyFile),
      minVersion: 'TLSv1',
      ciphers: 'DEFAULT@SECLEVEL=0',
    });
    await new Promise<void>((resolve) => permissive.listen(0, '127.0.0.1', resolve));
    t.teardown(() => permissive.close());
    t.equal(
      await handshake('TLSv1.1', 'TLSv1.1', (permissive.address() as AddressInfo).port),
      'TLSv1.1',
      'control server speaks TLS 1.1',
    );
    t.equal(await handshake('TLSv1.2', 'TLSv1.2'), 'TLSv1.2');
    await t.rejects(handshake('TLSv1.1', 'TLSv1.1'), {
      code: /ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION|ERR_SSL_UNSUPPORTED_PROTOCOL/,
    });
    await t.rejects(handshake('TLSv1', 'TLSv1'), {
      code: /ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION|ERR_SSL_UNSUPPORTED_PROTOCOL/,
    });
  });

  t.test('no request body content in any log line', async (t) => {
    // The whole run logged at trace level; Secret data and pod literal passwords never appear.
    for (const fixture of ['secret-postgresql-update-password', 'secret-postgresql-delete', 'pod-api-literal']) {
      for (const secret of sensitiveStringsOf(loadReview(fixture)))
        t.notMatch(captured.text(), secret, `${fixture}: not in the log`);
    }
    t.ok(
      captured.lines().some((l) => l.msg === 'admission request answered'),
      'per-request lines were written',
    );
    t.ok(
      captured.lines().every((l) => !('body' in l) && !('object' in l)),
      'no body or object field',
    );
  });
});

/** A request the webhook cannot judge: the HTTP status, and an AdmissionReview that names the problem. */
function checkRejection(
  t: Test,
  c: { name: string; status: number; message: RegExp; uid?: string },
  res: HttpsResponse,
): void {
  t.equal(res.status, c.status, `${c.name}: HTTP ${c.status}`);
  t.equal(res.headers['content-type']?.split(';')[0], 'application/json', `${c.name}: JSON body`);
  const review = reviewOf(res.json);
  t.equal(review?.kind, 'AdmissionReview', `${c.name}: answered as an AdmissionReview`);
  t.equal(review?.response.allowed, false, `${c.name}: not allowed`);
  t.equal(review?.response.status?.code, c.status, `${c.name}: status.code`);
  t.match(review?.response.status?.message, c.message, `${c.name}: message names the problem`);
  t.equal(review?.response.uid, c.uid ?? '', `${c.name}: uid echoed when there was one`);
}
