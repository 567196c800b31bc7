// The Events calls of the audit trail on @kubernetes/client-node (events.k8s.io/v1).
import {
  EventsV1Api,
  PatchStrategy,
  setHeaderOptions,
  type EventsV1Event,
  type KubeConfig,
} from '@kubernetes/client-node';
import type { EventsApi } from './event-recorder.js';

export function eventsApiFor(kubeConfig: KubeConfig): EventsApi {
  const api = kubeConfig.makeApiClient(EventsV1Api);
  return {
    async create(namespace, event) {
      // The body is plain JSON; its MicroTime strings pass through the client's serializer unchanged.
      await api.createNamespacedEvent({ namespace, body: event as unknown as EventsV1Event });
    },
    async patch(namespace, name, mergePatch) {
      await api.patchNamespacedEvent(
        { namespace, name, body: mergePatch },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    },
  };
}
