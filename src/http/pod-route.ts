// POST /mutate/pods: Pod CREATE goes to the pure mutatePod; anything else is allowed unchanged
// (a Pod's env cannot change after creation).
import { mutatePod } from '../admission/pod-mutation.js';
import type { GuardSettings } from '../admission/settings.js';
import { allowed, patched, type AdmissionHandler } from './admission-review.js';

export function podMutationHandler(settings: GuardSettings): AdmissionHandler {
  return (request) => {
    const isPodCreate = request.operation === 'CREATE' && request.kind.group === '' && request.kind.kind === 'Pod'
      && !request.subResource;
    if (!isPodCreate || !request.object) return allowed();
    const result = mutatePod(request.object, settings);
    return patched(result.patch, result.warnings);
  };
}
