{{/*
A Dify Deployment (and nothing else). Args (dict):
  root      $                       key        component key of contract.components
  c         the contract ($c)       image      image reference
  values    the component's values  replicas   number
  env       env list ("dify.env.<component>"; "dify.validateValues" checks it for duplicate names)
  ports     container ports         probes     dict of livenessProbe/readinessProbe/startupProbe handlers
  command, args, volumeMounts, volumes, affinity, strategy, initContainers: optional
*/}}
{{- define "dify.deployment" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $values := .values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "dify.fullname" (list $root $c .key) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "dify.labels" (list $root $c .key) | nindent 4 }}
spec:
  replicas: {{ .replicas }}
  revisionHistoryLimit: 5
  {{- with .strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "dify.selectorLabels" (list $root $c .key) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "dify.labels" (list $root $c .key) | nindent 8 }}
      {{- include "dify.podAnnotations" (dict "root" $root "c" $c "podAnnotations" $values.podAnnotations) | nindent 6 }}
    spec:
      # Dify talks to no Kubernetes API: no token in its pods.
      automountServiceAccountToken: false
      {{- include "dify.imagePullSecrets" $root | nindent 6 }}
      securityContext:
        {{- toYaml $values.podSecurityContext | nindent 8 }}
      {{- with $values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (default .affinity $values.affinity) }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .initContainers }}
      initContainers:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ include "dify.component" (list $root $c .key) }}
          image: {{ .image }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          {{- with .command }}
          command:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .args }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .ports }}
          ports:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- range $probe := list "startupProbe" "livenessProbe" "readinessProbe" }}
          {{- $handler := index $.probes $probe }}
          {{- if and $handler (hasKey $values $probe) }}
          {{- with include "dify.probe" (dict "probe" (index $values $probe) "handler" $handler) }}
          {{ $probe }}:
            {{- . | nindent 12 }}
          {{- end }}
          {{- end }}
          {{- end }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          securityContext:
            {{- toYaml $values.containerSecurityContext | nindent 12 }}
          {{- with .volumeMounts }}
          volumeMounts:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      {{- with .volumes }}
      volumes:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/* A ClusterIP Service for a Dify component. Args: list $ $c key port. */}}
{{- define "dify.service" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $key := index . 2 -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "dify.fullname" (list $root $c $key) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "dify.labels" (list $root $c $key) | nindent 4 }}
spec:
  type: ClusterIP
  ports:
    - name: http
      port: {{ index . 3 }}
      targetPort: http
  selector:
    {{- include "dify.selectorLabels" (list $root $c $key) | nindent 4 }}
{{- end -}}

{{/* api/worker storage volume: the shared PVC, or an emptyDir. Args: list $ $c. */}}
{{- define "dify.storageVolume" -}}
{{- $root := index . 0 -}}
{{- $p := $root.Values.storage.persistence -}}
- name: storage
{{- if $p.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (include "dify.name" (list $root (index . 1) "storage")) $p.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{/* Return "true" when the api/worker storage is a PVC without ReadWriteMany: it attaches to one node at a time. */}}
{{- define "dify.storage.singleNode" -}}
{{- $p := .Values.storage.persistence -}}
{{- if and $p.enabled (not (has "ReadWriteMany" $p.accessModes)) -}}true{{- end -}}
{{- end -}}

{{/*
Return the pod affinity of api and worker on single-node storage: every pod that mounts the volume runs on
the node where it is attached (any api or worker pod of the release). A pod that matches its own term may
start anywhere when none runs yet, so the first one places the volume and the rest follow it. Args: list $ $c.
*/}}
{{- define "dify.storage.affinity" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $selector := dict
  "matchLabels" (dict (index $c.labels "name") $c.values.difyName (index $c.labels "instance") $root.Release.Name)
  "matchExpressions" (list (dict
    "key" (index $c.labels "component") "operator" "In" "values" (list $c.components.api $c.components.worker))) -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" $selector -}}
{{- toYaml (dict "podAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term))) -}}
{{- end -}}

{{/*
Return the init container that hands the storage folder to Dify's user, as upstream's compose does with its
init_permissions service: fsGroup is applied only where the CSI driver's fsGroupPolicy allows it (not on
ReadWriteMany volumes with the default policy). It runs the PostgreSQL image the chart already pulls (the
migration Job's wait runs it too: nothing more to mirror), as root with CHOWN and DAC_OVERRIDE only, changes
only what Dify's user does not own yet, and never follows a symbolic link.
*/}}
{{- define "dify.storage.initContainer" -}}
{{- $uid := int (default 1001 .Values.api.podSecurityContext.runAsUser) -}}
{{- $gid := int (default $uid .Values.api.podSecurityContext.runAsGroup) -}}
- name: storage-permissions
  image: {{ include "dify.image" (dict "image" .Values.postgresql.image "root" . "defaultTag" "15-alpine") }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - /bin/sh
    - -c
    - {{ printf `find /app/api/storage \( ! -user %d -o ! -group %d \) -exec chown -h %d:%d {} +` $uid $gid $uid $gid | quote }}
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {cpu: 200m, memory: 64Mi}
  securityContext:
    runAsUser: 0
    runAsGroup: 0
    runAsNonRoot: false
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: [ALL]
      add: [CHOWN, DAC_OVERRIDE]
  volumeMounts:
    - name: storage
      mountPath: /app/api/storage
{{- end -}}

{{/*
A Celery process check: liveness of worker and beat, which serve no port. Args: process word.
The [c] keeps the pattern from matching the probe's own command line.
*/}}
{{- define "dify.celeryProbe" -}}
exec:
  command:
    - /bin/sh
    - -c
    - {{ printf "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\" 2>/dev/null | grep -q '[c]elery.* %s' && exit 0; done; exit 1" . | quote }}
{{- end -}}

{{/*
A probe. Args: dict "probe" (values: enabled + timing) "handler" (dict with httpGet/tcpSocket/exec).
Renders nothing when disabled.
*/}}
{{- define "dify.probe" -}}
{{- if .probe.enabled -}}
{{- toYaml (merge (deepCopy .handler) (omit .probe "enabled")) -}}
{{- end -}}
{{- end -}}

{{/* A pod template's annotations: the component's podAnnotations and dify-guard's Redis Secret hints. Args: dict "root" $ "c" $c "podAnnotations". */}}
{{- define "dify.podAnnotations" -}}
{{- $annotations := merge (include "dify.redis.podAnnotations" (list .root .c) | fromYaml) (default dict .podAnnotations) -}}
{{- if $annotations }}
annotations:
  {{- toYaml $annotations | nindent 2 }}
{{- end }}
{{- end -}}

{{/* StorageClass of a PVC: component value, else global.storageClass; "-" means "" (no class). */}}
{{- define "dify.storageClass" -}}
{{- $class := default .root.Values.global.storageClass .persistence.storageClass -}}
{{- if $class -}}
{{- if eq $class "-" }}
storageClassName: ""
{{- else }}
storageClassName: {{ $class | quote }}
{{- end -}}
{{- end -}}
{{- end -}}
