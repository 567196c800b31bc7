{{/*
Environment lists (YAML arrays; templates parse them with fromYamlArray). Each container's whole list is
built here, "dify.env.<component>", so that the Deployment that runs it and the duplicate-name check of
"dify.validateValues" ("dify.env.containers") see the same list. Args: list $ $c unless said otherwise.
*/}}

{{/* DB_* of the bundled PostgreSQL. Args: dict "root" $ "c" $c "database" name. DB_PASSWORD only by secretKeyRef. */}}
{{- define "dify.env.db" -}}
{{- $root := .root -}}
{{- $c := .c -}}
- name: DB_TYPE
  value: postgresql
- name: DB_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "dify.name" (list $root $c "postgresqlSecret") }}
      key: {{ $c.secretKeys.postgresUsername }}
- name: {{ $c.env.dbPassword }}
  valueFrom:
    secretKeyRef:
      name: {{ include "dify.name" (list $root $c "postgresqlSecret") }}
      key: {{ $c.secretKeys.postgresPassword }}
- name: DB_HOST
  value: {{ include "dify.name" (list $root $c "postgresql") | quote }}
- name: DB_PORT
  value: {{ $root.Values.postgresql.service.port | quote }}
- name: DB_DATABASE
  value: {{ .database | quote }}
{{- end -}}

{{/* REDIS_* then CELERY_BROKER_URL: REDIS_PASSWORD must come first, Kubernetes expands only earlier names. */}}
{{- define "dify.env.redis" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $auth := $root.Values.pluginDaemon.redis.authEnabled -}}
- name: {{ $c.env.redisHost }}
  value: {{ include "dify.redis.host" . | quote }}
- name: {{ $c.env.redisPort }}
  value: {{ include "dify.redis.port" . | quote }}
{{- if $auth }}
- name: {{ $c.env.redisPassword }}
  valueFrom:
    secretKeyRef:
      name: {{ include "dify.redis.secretName" . }}
      key: {{ include "dify.redis.secretKey" . }}
{{- end }}
- name: REDIS_USE_SSL
  value: "false"
- name: REDIS_DB
  value: "0"
{{- end -}}

{{- define "dify.env.celery" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $credentials := ternary (printf ":$(%s)@" $c.env.redisPassword) "" ($root.Values.pluginDaemon.redis.authEnabled | default false) -}}
- name: {{ $c.env.celeryBrokerUrl }}
  value: {{ printf "redis://%s%s:%s/1" $credentials (include "dify.redis.host" .) (include "dify.redis.port" .) | quote }}
- name: CELERY_BACKEND
  value: redis
- name: BROKER_USE_SSL
  value: "false"
{{- end -}}

{{/* A key of the app Secret (SECRET_KEY, the keys shared with sandbox/plugin daemon, OpenAI). Args: dict "root" $ "c" $c "name" "key" ["optional"]. */}}
{{- define "dify.env.appSecret" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "dify.name" (list .root .c "appSecrets") }}
      key: {{ index .c.appSecretKeys .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* Env shared by api, worker, beat and the migration Job (same image, same app factory). */}}
{{- define "dify.env.backend" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $api := include "dify.fullname" (list $root $c "api") -}}
{{- $urls := $root.Values.dify.urls -}}
{{- with $root -}}
- name: LOG_LEVEL
  value: {{ .Values.dify.logLevel | quote }}
- name: DEPLOY_ENV
  value: PRODUCTION
- name: {{ $c.env.migrationEnabled }}
  value: "false"
{{ include "dify.env.appSecret" (dict "root" . "c" $c "name" "SECRET_KEY" "key" "secretKey") }}
{{ include "dify.env.db" (dict "root" . "c" $c "database" .Values.postgresql.auth.database) }}
{{ include "dify.env.redis" (list . $c) }}
{{ include "dify.env.celery" (list . $c) }}
- name: CONSOLE_WEB_URL
  value: {{ $urls.consoleWeb | quote }}
- name: CONSOLE_API_URL
  value: {{ $urls.consoleApi | quote }}
- name: SERVICE_API_URL
  value: {{ $urls.serviceApi | quote }}
- name: APP_WEB_URL
  value: {{ $urls.appWeb | quote }}
- name: APP_API_URL
  value: {{ $urls.appApi | quote }}
- name: FILES_URL
  value: {{ $urls.files | quote }}
- name: INTERNAL_FILES_URL
  value: {{ printf "http://%s:%d" $api (int .Values.api.service.port) | quote }}
{{ include "dify.env.publicUrls" (list . $c) }}
- name: STORAGE_TYPE
  value: opendal
- name: OPENDAL_SCHEME
  value: fs
- name: OPENDAL_FS_ROOT
  value: storage
{{- if .Values.vectorStore.type }}
- name: VECTOR_STORE
  value: {{ .Values.vectorStore.type | quote }}
{{- if eq .Values.vectorStore.type "pgvector" }}
- name: PGVECTOR_HOST
  value: {{ include "dify.name" (list . $c "postgresql") | quote }}
- name: PGVECTOR_PORT
  value: {{ .Values.postgresql.service.port | quote }}
- name: PGVECTOR_USER
  valueFrom:
    secretKeyRef:
      name: {{ include "dify.name" (list . $c "postgresqlSecret") }}
      key: {{ $c.secretKeys.postgresUsername }}
- name: PGVECTOR_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "dify.name" (list . $c "postgresqlSecret") }}
      key: {{ $c.secretKeys.postgresPassword }}
- name: PGVECTOR_DATABASE
  value: {{ .Values.postgresql.auth.database | quote }}
{{- end }}
{{- end }}
- name: CODE_EXECUTION_ENDPOINT
  value: {{ printf "http://%s:%d" (include "dify.fullname" (list . $c "sandbox")) (int .Values.sandbox.service.port) | quote }}
{{ include "dify.env.appSecret" (dict "root" . "c" $c "name" "CODE_EXECUTION_API_KEY" "key" "sandboxApiKey") }}
- name: PLUGIN_DAEMON_URL
  value: {{ printf "http://%s:%d" (include "dify.fullname" (list . $c "pluginDaemon")) (int .Values.pluginDaemon.service.port) | quote }}
{{ include "dify.env.appSecret" (dict "root" . "c" $c "name" "PLUGIN_DAEMON_KEY" "key" "pluginDaemonKey") }}
{{ include "dify.env.appSecret" (dict "root" . "c" $c "name" "INNER_API_KEY_FOR_PLUGIN" "key" "innerApiKeyForPlugin") }}
- name: PLUGIN_MAX_PACKAGE_SIZE
  value: {{ .Values.pluginDaemon.maxPackageSize | int64 | quote }}
- name: MARKETPLACE_ENABLED
  value: {{ .Values.dify.marketplace.enabled | quote }}
- name: MARKETPLACE_API_URL
  value: {{ .Values.dify.marketplace.apiUrl | quote }}
{{- if .Values.ssrfProxy.enabled }}
- name: SSRF_PROXY_HTTP_URL
  value: {{ printf "http://%s:%d" (include "dify.fullname" (list . $c "ssrfProxy")) (int .Values.ssrfProxy.service.port) | quote }}
- name: SSRF_PROXY_HTTPS_URL
  value: {{ printf "http://%s:%d" (include "dify.fullname" (list . $c "ssrfProxy")) (int .Values.ssrfProxy.service.port) | quote }}
{{- end }}
{{ include "dify.env.appSecret" (dict "root" . "c" $c "name" "OPENAI_API_KEY" "key" "openaiApiKey" "optional" true) }}
{{- end -}}
{{- end -}}

{{/*
The public URLs Dify builds for outside callers, never Dify's localhost defaults: TRIGGER_URL (workflow
webhook triggers, /triggers on api), ENDPOINT_URL_TEMPLATE (plugin endpoints, /e/ on the plugin daemon) and
PLUGIN_REMOTE_INSTALL_HOST/PORT (shown for remote plugin debugging: the daemon's TCP port 5003).
*/}}
{{- define "dify.env.publicUrls" -}}
{{- $root := index . 0 -}}
{{- $origin := include "dify.publicOrigin" $root -}}
{{- $remote := $root.Values.pluginDaemon.remoteInstall -}}
- name: TRIGGER_URL
  value: {{ default $origin $root.Values.dify.urls.trigger | quote }}
- name: ENDPOINT_URL_TEMPLATE
  value: {{ default (printf "%s/e/{hook_id}" $origin) $root.Values.dify.urls.endpointTemplate | quote }}
- name: PLUGIN_REMOTE_INSTALL_HOST
  value: {{ default (printf "%s.%s.svc" (include "dify.fullname" (list $root (index . 1) "pluginDaemon")) $root.Release.Namespace) $remote.host | quote }}
- name: PLUGIN_REMOTE_INSTALL_PORT
  value: {{ $remote.port | int | quote }}
{{- end -}}

{{/* Each Dify container's env list (api, worker, beat, web, sandbox, plugin daemon, migration Job): a YAML list of dict "container" name "env" list. */}}
{{- define "dify.env.containers" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $containers := list -}}
{{- $keys := list "api" "worker" -}}
{{- if $root.Values.beat.enabled -}}{{- $keys = append $keys "beat" -}}{{- end -}}
{{- range $key := concat $keys (list "web" "sandbox" "pluginDaemon") -}}
{{- $env := include (printf "dify.env.%s" $key) (list $root $c) | fromYamlArray -}}
{{- $containers = append $containers (dict "container" (include "dify.fullname" (list $root $c $key)) "env" $env) -}}
{{- end -}}
{{- if $root.Values.migration.enabled -}}
{{- $env := include "dify.env.migration" (list $root $c) | fromYamlArray -}}
{{- $containers = append $containers (dict "container" (include "dify.name" (list $root $c "migrationJob")) "env" $env) -}}
{{- end -}}
{{- toYaml $containers -}}
{{- end -}}

{{- define "dify.env.api" -}}
{{- $root := index . 0 -}}
{{- $own := list
  (dict "name" "MODE" "value" "api")
  (dict "name" "DIFY_PORT" "value" "5001")
  (dict "name" "SERVER_WORKER_AMOUNT" "value" (toString $root.Values.api.serverWorkerAmount)) -}}
{{- concat (include "dify.env.backend" . | fromYamlArray) $own $root.Values.dify.extraEnv $root.Values.api.extraEnv | toYaml -}}
{{- end -}}

{{- define "dify.env.worker" -}}
{{- $root := index . 0 -}}
{{- $own := list (dict "name" "MODE" "value" "worker") -}}
{{- concat (include "dify.env.backend" . | fromYamlArray) $own $root.Values.dify.extraEnv $root.Values.worker.extraEnv | toYaml -}}
{{- end -}}

{{- define "dify.env.beat" -}}
{{- $root := index . 0 -}}
{{- $own := list (dict "name" "MODE" "value" "beat") -}}
{{- concat (include "dify.env.backend" . | fromYamlArray) $own $root.Values.dify.extraEnv $root.Values.beat.extraEnv | toYaml -}}
{{- end -}}

{{/* The migration Job's container: the backend's env, nothing of its own. */}}
{{- define "dify.env.migration" -}}
{{- $root := index . 0 -}}
{{- concat (include "dify.env.backend" . | fromYamlArray) $root.Values.dify.extraEnv $root.Values.migration.extraEnv | toYaml -}}
{{- end -}}

{{- define "dify.env.web" -}}
{{- $root := index . 0 -}}
{{- $urls := $root.Values.dify.urls -}}
{{- $own := list
  (dict "name" "EDITION" "value" "SELF_HOSTED")
  (dict "name" "CONSOLE_API_URL" "value" $urls.consoleApi)
  (dict "name" "APP_API_URL" "value" $urls.appApi)
  (dict "name" "MARKETPLACE_API_URL" "value" $root.Values.dify.marketplace.apiUrl)
  (dict "name" "MARKETPLACE_URL" "value" $root.Values.dify.marketplace.url)
  (dict "name" "NEXT_TELEMETRY_DISABLED" "value" "1")
  (dict "name" "PORT" "value" "3000") -}}
{{- concat $own $root.Values.web.extraEnv | toYaml -}}
{{- end -}}

{{/* The sandbox reaches the network only through the ssrf-proxy, when there is one. */}}
{{- define "dify.env.sandbox" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $values := $root.Values.sandbox -}}
{{- $env := list
  (dict "name" "API_KEY" "valueFrom" (dict "secretKeyRef" (dict "name" (include "dify.name" (list $root $c "appSecrets")) "key" $c.appSecretKeys.sandboxApiKey)))
  (dict "name" "GIN_MODE" "value" "release")
  (dict "name" "WORKER_TIMEOUT" "value" (toString $values.workerTimeout))
  (dict "name" "ENABLE_NETWORK" "value" (toString $values.enableNetwork))
  (dict "name" "SANDBOX_PORT" "value" "8194")
-}}
{{- if $root.Values.ssrfProxy.enabled -}}
{{- $proxy := printf "http://%s:%d" (include "dify.fullname" (list $root $c "ssrfProxy")) (int $root.Values.ssrfProxy.service.port) -}}
{{- $env = concat $env (list (dict "name" "HTTP_PROXY" "value" $proxy) (dict "name" "HTTPS_PROXY" "value" $proxy)) -}}
{{- end -}}
{{- concat $env $values.extraEnv | toYaml -}}
{{- end -}}

{{/* The plugin daemon's own database (dify_plugin) through the same DB_* helper: DB_DATABASE appears once. */}}
{{- define "dify.env.pluginDaemon" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $values := $root.Values.pluginDaemon -}}
{{- $secrets := include "dify.name" (list $root $c "appSecrets") -}}
{{- concat
  (list (dict "name" $c.env.migrationEnabled "value" "false"))
  (include "dify.env.db" (dict "root" $root "c" $c "database" $values.database) | fromYamlArray)
  (list
    (dict "name" "DB_DEFAULT_DATABASE" "value" "postgres")
    (dict "name" "DB_SSL_MODE" "value" "disable"))
  (include "dify.env.redis" . | fromYamlArray)
  (list
    (dict "name" "SERVER_PORT" "value" "5002")
    (dict "name" "SERVER_KEY" "valueFrom" (dict "secretKeyRef" (dict "name" $secrets "key" $c.appSecretKeys.pluginDaemonKey)))
    (dict "name" "GIN_MODE" "value" "release")
    (dict "name" "PLATFORM" "value" "local")
    (dict "name" "DIFY_INNER_API_URL" "value" (printf "http://%s:%d" (include "dify.fullname" (list $root $c "api")) (int $root.Values.api.service.port)))
    (dict "name" "DIFY_INNER_API_KEY" "valueFrom" (dict "secretKeyRef" (dict "name" $secrets "key" $c.appSecretKeys.innerApiKeyForPlugin)))
    (dict "name" "PLUGIN_REMOTE_INSTALLING_HOST" "value" "0.0.0.0")
    (dict "name" "PLUGIN_REMOTE_INSTALLING_PORT" "value" "5003")
    (dict "name" "PLUGIN_WORKING_PATH" "value" "/app/storage/cwd")
    (dict "name" "PLUGIN_STORAGE_TYPE" "value" "local")
    (dict "name" "PLUGIN_STORAGE_LOCAL_ROOT" "value" "/app/storage")
    (dict "name" "PLUGIN_INSTALLED_PATH" "value" "plugin")
    (dict "name" "PLUGIN_PACKAGE_CACHE_PATH" "value" "plugin_packages")
    (dict "name" "PLUGIN_MEDIA_CACHE_PATH" "value" "assets")
    (dict "name" "MAX_PLUGIN_PACKAGE_SIZE" "value" ($values.maxPackageSize | int64 | toString))
    (dict "name" "FORCE_VERIFYING_SIGNATURE" "value" (toString $values.forceVerifyingSignature))
    (dict "name" "PYTHON_ENV_INIT_TIMEOUT" "value" (toString $values.pythonEnvInitTimeout))
    (dict "name" "PLUGIN_MAX_EXECUTION_TIMEOUT" "value" (toString $values.maxExecutionTimeout))
    (dict "name" "PIP_MIRROR_URL" "value" $values.pipMirrorUrl))
  $values.extraEnv | toYaml -}}
{{- end -}}
