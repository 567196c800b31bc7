// The AdmissionReview helpers: responses built from verdicts, and envelope problems named precisely
// without echoing content.
import t from 'tap';
import type { PatchOperation } from '../../src/admission/types.js';
import {
  allowed,
  checkAdmissionReview,
  decisionOf,
  denied,
  errored,
  patched,
  reviewResponse,
  uidOf,
} from '../../src/http/admission-review.js';
import { loadReview } from '../../harness/fixtures.js';
import { REMOVE, withEdits } from '../server/support.js';

t.test('responses from verdicts', async (t) => {
  t.same(reviewResponse('u1', allowed()), {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    response: { uid: 'u1', allowed: true },
  });
  t.same(
    reviewResponse('u2', patched([])).response,
    { uid: 'u2', allowed: true },
    'an empty patch: neither patch nor patchType',
  );
  const patch: PatchOperation[] = [{ op: 'replace', path: '/spec/containers/0/env/1/value', value: 'false' }];
  const response = reviewResponse('u3', patched(patch, ['MIGRATION_ENABLED forced to "false"'])).response;
  t.equal(response.patchType, 'JSONPatch');
  t.same(JSON.parse(Buffer.from(response.patch!, 'base64').toString('utf8')), patch, 'base64 of the RFC 6902 array');
  t.same(response.warnings, ['MIGRATION_ENABLED forced to "false"']);
  const denial = reviewResponse('u4', { ...denied('no', ['w']), auditAnnotations: { decision: 'denied' } }).response;
  t.same(denial, {
    uid: 'u4',
    allowed: false,
    status: { code: 403, reason: 'Forbidden', message: 'no' },
    warnings: ['w'],
    auditAnnotations: { decision: 'denied' },
  });
  t.notOk(
    'auditAnnotations' in reviewResponse('u5', { allowed: true, auditAnnotations: {} }).response,
    'empty annotations omitted',
  );
  t.same(reviewResponse('', errored(415, 'UnsupportedMediaType', 'm')).response, {
    uid: '',
    allowed: false,
    status: { code: 415, reason: 'UnsupportedMediaType', message: 'm' },
  });
  t.equal(decisionOf(allowed()), 'allowed');
  t.equal(decisionOf(patched(patch)), 'patched');
  t.equal(decisionOf(patched([])), 'allowed');
  t.equal(decisionOf(denied('x')), 'denied');
});

t.test('envelope problems', async (t) => {
  const good = loadReview('secret-postgresql-update-password');
  const check = checkAdmissionReview(good);
  t.ok(check.ok);
  if (check.ok) t.equal(check.request.uid, good.request.uid);

  const problems = (...edits: [path: string, to: unknown][]): string[] => {
    const result = checkAdmissionReview(withEdits(good, ...edits));
    return result.ok ? [] : result.problems;
  };
  t.same(problems(['apiVersion', 'admission.k8s.io/v1beta1']), [
    'apiVersion must be "admission.k8s.io/v1", got "admission.k8s.io/v1beta1"',
  ]);
  t.same(problems(['kind', REMOVE]), ['kind is missing']);
  t.same(problems(['request.kind', 'Secret']), ['request.kind must be an object, got a string']);
  t.same(problems(['request.resource.resource', REMOVE]), ['request.resource.resource is missing']);
  t.same(problems(['request.userInfo.groups', 'system:masters']), [
    'request.userInfo.groups must be an array, got a string',
  ]);
  t.same(problems(['request.dryRun', 'true']), ['request.dryRun must be a boolean, got a string']);
  t.same(problems(['request.object', []]), ['request.object must be an object or null, got an array']);
  t.same(
    problems(['apiVersion', 'v1'], ['kind', 'Secret'], ['request.uid', REMOVE]).sort(),
    [
      'apiVersion must be "admission.k8s.io/v1", got "v1"',
      'kind must be "AdmissionReview", got "Secret"',
      'request.uid is missing',
    ],
    'every problem at once',
  );

  // Values that may be content are described, never quoted.
  const secretish = 'Old-Pg-Pass-7f3a9c';
  for (const edit of [
    ['kind', secretish],
    ['request.operation', secretish],
    ['apiVersion', { password: secretish }],
  ] as [string, unknown][]) {
    const text = problems(edit).join(' ');
    t.notMatch(text, secretish);
    t.match(text, /got an? (string|object)/);
  }
});

t.test('uidOf reads request.uid only when it is a string', async (t) => {
  t.equal(uidOf({ request: { uid: 'abc' } }), 'abc');
  t.equal(uidOf({ request: { uid: 7 } }), '');
  t.equal(uidOf({ request: 'x' }), '');
  t.equal(uidOf(null), '');
  t.equal(uidOf([]), '');
});
