{{/*
A Dify Deployment (and nothing else). Args (dict):
  root      $                       key        component key of contract.components
  values    the component's values  image      image reference
  env       env list (checked for duplicate names)      replicas  number
  ports     container ports         probes     dict of livenessProbe/readinessProbe/startupProbe handlers
  command, args, volumeMounts, volumes, affinity, strategy: optional
*/}}
{{- define "dify.deployment" -}}
{{- $root := .root -}}
{{- $values := .values -}}
{{- $name := include "dify.fullname" (list $root .key) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "dify.labels" (list $root .key) | nindent 4 }}
spec:
  replicas: {{ .replicas }}
  revisionHistoryLimit: 5
  {{- with .strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "dify.selectorLabels" (list $root .key) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "dify.labels" (list $root .key) | nindent 8 }}
      {{- include "dify.podAnnotations" (dict "root" $root "podAnnotations" $values.podAnnotations) | nindent 6 }}
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
      containers:
        - name: {{ include "dify.component" (list $root .key) }}
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
            {{- include "dify.renderEnv" (dict "env" . "where" (printf "the %s container" $name)) | nindent 12 }}
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

{{/* A ClusterIP Service for a Dify component. Args: list $ key port. */}}
{{- define "dify.service" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "dify.fullname" (list $root $key) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "dify.labels" (list $root $key) | nindent 4 }}
spec:
  type: ClusterIP
  ports:
    - name: http
      port: {{ index . 2 }}
      targetPort: http
  selector:
    {{- include "dify.selectorLabels" (list $root $key) | nindent 4 }}
{{- end -}}

{{/* api/worker storage volume: the shared PVC, or an emptyDir. */}}
{{- define "dify.storageVolume" -}}
{{- $p := .Values.storage.persistence -}}
- name: storage
{{- if $p.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (include "dify.name" (list . "storage")) $p.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
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
