// The in-process cost of each step dify-guard takes per request, without network, TLS or HTTP:
// the same source functions, timed in a loop (best of 5 rounds, after a warm-up), so the share of
// the decisions in the server view's CPU per request can be read off.
import jsonpatch from 'fast-json-patch';
import { mutatePod } from '../../src/admission/pod-mutation.js';
import { judgeSecretChange, secretChangeFromRequest } from '../../src/admission/secret-guard.js';
import { defaultGuardSettings } from '../../src/admission/settings.js';
import type { AdmissionRequest, JsonObject, PatchOperation } from '../../src/admission/types.js';
import { checkAdmissionReview, denied, patched, reviewResponse } from '../../src/http/admission-review.js';
import { loadReview } from '../../harness/fixtures.js';

export interface MicroResult {
  step: string;
  us: number;
}

function time(step: string, fn: () => unknown, iterations: number): MicroResult {
  for (let i = 0; i < Math.min(1000, iterations); i++) fn();
  let best = Infinity;
  for (let round = 0; round < 5; round++) {
    const started = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) fn();
    best = Math.min(best, Number(process.hrtime.bigint() - started) / iterations / 1000);
  }
  return { step, us: Math.round(best * 10) / 10 };
}

export function runMicro(iterations = 2000): MicroResult[] {
  const podText = JSON.stringify(loadReview('pod-api-literal'));
  const podReview = JSON.parse(podText) as { request: AdmissionRequest };
  const pod = podReview.request.object as JsonObject;
  const mutation = mutatePod(pod, defaultGuardSettings);
  const mutated = jsonpatch.applyPatch(structuredClone(pod), mutation.patch as jsonpatch.Operation[]).newDocument;
  const podResponse = reviewResponse('uid', patched(mutation.patch as PatchOperation[], mutation.warnings));
  const deniedText = JSON.stringify(loadReview('secret-postgresql-update-password'));
  const deniedRequest = (JSON.parse(deniedText) as { request: AdmissionRequest }).request;
  const unchangedRequest = loadReview('secret-postgresql-update-unchanged').request;
  const decision = judgeSecretChange(secretChangeFromRequest(deniedRequest), defaultGuardSettings, () => 'present');
  return [
    time(`JSON.parse of the pod AdmissionReview (${podText.length} B)`, () => JSON.parse(podText), iterations),
    time('checkAdmissionReview (ajv envelope)', () => checkAdmissionReview(podReview), iterations),
    time('mutatePod (pod-api-literal), total', () => mutatePod(pod, defaultGuardSettings), iterations),
    // mutatePod copies only what it edits; a whole-pod copy and diff are what it used to cost.
    time('  (for comparison) structuredClone(pod)', () => structuredClone(pod), iterations),
    time(
      '  (for comparison) fast-json-patch compare(pod, separate mutated copy)',
      () => jsonpatch.compare(pod, mutated),
      iterations,
    ),
    time(
      'reviewResponse of the pod verdict (patch to base64)',
      () => reviewResponse('uid', patched(mutation.patch as PatchOperation[], mutation.warnings)),
      iterations,
    ),
    time(
      "JSON.stringify of that response (fastify's default serializer)",
      () => JSON.stringify(podResponse),
      iterations,
    ),
    time(`JSON.parse of the Secret AdmissionReview (${deniedText.length} B)`, () => JSON.parse(deniedText), iterations),
    time(
      'judgeSecretChange, password change under PVC (denied)',
      () => judgeSecretChange(secretChangeFromRequest(deniedRequest), defaultGuardSettings, () => 'present'),
      iterations,
    ),
    time(
      'judgeSecretChange, nothing changed (allowed)',
      () => judgeSecretChange(secretChangeFromRequest(unchangedRequest), defaultGuardSettings, () => 'present'),
      iterations,
    ),
    time(
      'reviewResponse of the denial',
      () => reviewResponse('uid', denied(decision.message ?? '', decision.warnings)),
      iterations,
    ),
  ];
}
