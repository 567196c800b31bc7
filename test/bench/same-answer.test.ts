// The bench's check of every load response (bench/lib/load.ts sameAnswerAs): an answer counts as the same
// as the first one when uid, allowed, patch, patchType, status code and reason match; a refusal's message
// (it varies with the verification outcome and the per-Secret rate limit) and warnings are not compared.
import t from 'tap';
import { sameAnswerAs } from '../../bench/lib/load.js';

const review = (response: Record<string, unknown>): string =>
  JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: 'u1', ...response } });
const denial = (message: string, extra: Record<string, unknown> = {}): string =>
  review({ allowed: false, status: { code: 403, reason: 'Forbidden', message }, ...extra });

t.test('a refusal whose message or warnings differ is the same answer', async (t) => {
  const same = sameAnswerAs(denial('PostgreSQL does not accept this password yet'));
  t.ok(same(denial('PostgreSQL does not accept this password yet')), 'the identical body');
  t.ok(same(denial('too many attempts for this Secret: retry in 9 s')), 'another message');
  t.ok(same(denial('retry in 3 s', { warnings: ['the PVC keeps its password'] })), 'with warnings');
});

t.test('what must be equal is compared', async (t) => {
  const same = sameAnswerAs(denial('refused'));
  t.notOk(same(review({ allowed: true })), 'allowed instead of refused');
  t.notOk(same(review({ allowed: false, status: { code: 400, reason: 'Forbidden', message: 'refused' } })), 'code');
  t.notOk(same(review({ allowed: false, status: { code: 403, reason: 'Invalid', message: 'refused' } })), 'reason');
  t.notOk(same(denial('refused').replace('"u1"', '"u2"')), 'another uid');
  t.notOk(same('not json'), 'a body that is not JSON');
  const patched = sameAnswerAs(review({ allowed: true, patchType: 'JSONPatch', patch: 'W10=' }));
  t.ok(patched(review({ allowed: true, patchType: 'JSONPatch', patch: 'W10=' })), 'the same patch');
  t.notOk(patched(review({ allowed: true, patchType: 'JSONPatch', patch: 'W3t9XQ==' })), 'another patch');
  t.notOk(patched(review({ allowed: true })), 'no patch');
});

t.test('a body that is not JSON is compared as it is', async (t) => {
  const same = sameAnswerAs('plain');
  t.ok(same('plain'));
  t.notOk(same('other'));
});
