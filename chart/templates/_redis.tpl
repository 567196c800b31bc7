{{/*
Redis connection (pluginDaemon.redis is the guide's section; every Dify component uses it). The helpers that
name an object or a Secret key take list $ $c (the contract, read once by the calling template).
*/}}

{{/* The Redis every Dify component uses: pluginDaemon.redis.host, else the bundled one (neither: "dify.check.redisHost" refuses the values). Args: list $ $c. */}}
{{- define "dify.redis.host" -}}
{{- $root := index . 0 -}}
{{- if $root.Values.pluginDaemon.redis.host -}}
{{- $root.Values.pluginDaemon.redis.host -}}
{{- else if $root.Values.redis.enabled -}}
{{- include "dify.name" (list $root (index . 1) "redisMaster") -}}
{{- end -}}
{{- end -}}

{{/* Args: list $ $c. */}}
{{- define "dify.redis.port" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- default (int $c.redisPort) $root.Values.pluginDaemon.redis.port | int -}}
{{- end -}}

{{/* The Secret holding the Redis password: an existing one, or the chart's <release>-redis. Args: list $ $c. */}}
{{- define "dify.redis.secretName" -}}
{{- $root := index . 0 -}}
{{- default (include "dify.name" (list $root (index . 1) "redisSecret")) $root.Values.pluginDaemon.redis.existingSecret -}}
{{- end -}}

{{/* Args: list $ $c. */}}
{{- define "dify.redis.secretKey" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- default $c.secretKeys.redisPassword $root.Values.pluginDaemon.redis.existingSecretPasswordKey -}}
{{- end -}}

{{/*
The chart-managed Redis password: the given one (checked by "dify.check.redisPassword"), else the one in the
existing <release>-redis Secret (kept across upgrades), else a new random one. Only called when the chart
renders that Secret. Args: list $ $c.
*/}}
{{- define "dify.redis.password" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $given := $root.Values.pluginDaemon.redis.password | toString -}}
{{- if $given -}}
{{- $given -}}
{{- else -}}
{{- $existing := (lookup "v1" "Secret" $root.Release.Namespace (include "dify.name" (list $root $c "redisSecret"))).data | default dict -}}
{{- $kept := index $existing $c.secretKeys.redisPassword | default "" -}}
{{- if $kept -}}{{- $kept | b64dec -}}{{- else -}}{{- randAlphaNum 32 -}}{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Pod annotations that tell dify-guard which Secret holds the Redis password, when it is not the
default <release>-redis / redis-password (an existing Secret). Args: list $ $c.
*/}}
{{- define "dify.redis.podAnnotations" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- if and $root.Values.pluginDaemon.redis.authEnabled $root.Values.pluginDaemon.redis.existingSecret -}}
{{ $c.annotations.redisSecretName }}: {{ include "dify.redis.secretName" . | quote }}
{{ $c.annotations.redisSecretKey }}: {{ include "dify.redis.secretKey" . | quote }}
{{- end -}}
{{- end -}}
