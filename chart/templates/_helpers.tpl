{{/*
Naming contract shared with dify-guard: chart/files/contract.json is the one source of every
label key, name template, Secret key, env var name and webhook name. Templates read it through
"dify.contract" and never repeat those strings.
*/}}

{{/* The contract as a dict: usage `$c := include "dify.contract" . | fromJson`. */}}
{{- define "dify.contract" -}}
{{- $contract := .Files.Get "files/contract.json" | fromJson -}}
{{- if not $contract.names -}}
{{- fail "chart/files/contract.json is missing or unreadable: the chart cannot name anything without it" -}}
{{- end -}}
{{- $contract | toJson -}}
{{- end -}}

{{/* Expands a contract name template. Args: dict "template" "release" ["component"]. */}}
{{- define "dify.expand" -}}
{{- .template | replace "{release}" .release | replace "{component}" (default "" .component) -}}
{{- end -}}

{{/* A named object of the contract (contract.names[key]) for this release. Args: list $ key. */}}
{{- define "dify.name" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $c := include "dify.contract" $root | fromJson -}}
{{- $template := index $c.names $key -}}
{{- if not $template -}}{{- fail (printf "contract.names has no %q" $key) -}}{{- end -}}
{{- include "dify.expand" (dict "template" $template "release" $root.Release.Name) -}}
{{- end -}}

{{/* The component's label value (contract.components[key]). Args: list $ key. */}}
{{- define "dify.component" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $c := include "dify.contract" $root | fromJson -}}
{{- $component := index $c.components $key -}}
{{- if not $component -}}{{- fail (printf "contract.components has no %q" $key) -}}{{- end -}}
{{- $component -}}
{{- end -}}

{{/* Object name of a Dify component: contract.names.component, e.g. dify-plugin-daemon. Args: list $ key. */}}
{{- define "dify.fullname" -}}
{{- $root := index . 0 -}}
{{- $c := include "dify.contract" $root | fromJson -}}
{{- include "dify.expand" (dict "template" $c.names.component "release" $root.Release.Name "component" (include "dify.component" .)) -}}
{{- end -}}

{{/*
Release names longer than this would push an object name or label over 63 characters
(e.g. the StatefulSet pod's controller-revision-hash label), and dify-guard expands the same
templates without truncating, so the chart refuses instead of truncating.
*/}}
{{- define "dify.validateReleaseName" -}}
{{- if gt (len .Release.Name) 40 -}}
{{- fail (printf "release name %q is %d characters long; use at most 40 (object names such as <release>-plugin-daemon and <release>-postgresql-0 must stay valid Kubernetes names, and dify-guard derives them from the release name without truncation)" .Release.Name (len .Release.Name)) -}}
{{- end -}}
{{- end -}}

{{- define "dify.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of a Dify component (immutable in Deployments/StatefulSets). Args: list $ key. */}}
{{- define "dify.selectorLabels" -}}
{{- $root := index . 0 -}}
{{- $c := include "dify.contract" $root | fromJson -}}
{{ index $c.labels "name" }}: {{ $c.values.difyName }}
{{ index $c.labels "instance" }}: {{ $root.Release.Name }}
{{ index $c.labels "component" }}: {{ include "dify.component" . }}
{{- end -}}

{{/* All labels of a Dify component's objects and pods, `app: <release>-<component>` included. Args: list $ key. */}}
{{- define "dify.labels" -}}
{{- $root := index . 0 -}}
{{- $c := include "dify.contract" $root | fromJson -}}
{{ include "dify.selectorLabels" . }}
{{ index $c.labels "partOf" }}: {{ $c.values.partOf }}
{{ index $c.labels "managedBy" }}: {{ $root.Release.Service }}
{{ index $c.labels "version" }}: {{ $root.Chart.AppVersion | quote }}
{{ index $c.labels "app" }}: {{ include "dify.expand" (dict "template" $c.names.appLabel "release" $root.Release.Name "component" (include "dify.component" .)) }}
helm.sh/chart: {{ include "dify.chart" $root }}
{{- end -}}

{{/* Labels of release-wide objects that belong to no single component (e.g. the app Secret, the Ingress). */}}
{{- define "dify.commonLabels" -}}
{{- $c := include "dify.contract" . | fromJson -}}
{{ index $c.labels "name" }}: {{ $c.values.difyName }}
{{ index $c.labels "instance" }}: {{ .Release.Name }}
{{ index $c.labels "partOf" }}: {{ $c.values.partOf }}
{{ index $c.labels "managedBy" }}: {{ .Release.Service }}
{{ index $c.labels "version" }}: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ include "dify.chart" . }}
{{- end -}}

{{/* Selector labels of dify-guard's pods: name=dify-guard, so its own webhooks never select them. */}}
{{- define "dify.guard.selectorLabels" -}}
{{- $c := include "dify.contract" . | fromJson -}}
{{ index $c.labels "name" }}: {{ $c.values.guardName }}
{{ index $c.labels "instance" }}: {{ .Release.Name }}
{{ index $c.labels "component" }}: {{ $c.components.webhook }}
{{- end -}}

{{- define "dify.guard.labels" -}}
{{- $c := include "dify.contract" . | fromJson -}}
{{ include "dify.guard.selectorLabels" . }}
{{ index $c.labels "partOf" }}: {{ $c.values.partOf }}
{{ index $c.labels "managedBy" }}: {{ .Release.Service }}
{{ index $c.labels "version" }}: {{ .Chart.Version | quote }}
{{ index $c.labels "app" }}: {{ include "dify.name" (list . "guard") }}
helm.sh/chart: {{ include "dify.chart" . }}
{{- end -}}

{{/* An image reference. Args: dict "image" (component image values) "root" $ "defaultTag" tag. */}}
{{- define "dify.image" -}}
{{- $registry := default .root.Values.global.imageRegistry .image.registry -}}
{{- $tag := default .defaultTag .image.tag | toString -}}
{{- if .image.digest -}}
{{- printf "%s%s@%s" (ternary "" (printf "%s/" $registry) (empty $registry)) .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s%s:%s" (ternary "" (printf "%s/" $registry) (empty $registry)) .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The Dify version tag shared by dify-api and dify-web (deploy.sh --image-tag). */}}
{{- define "dify.difyTag" -}}
{{- default .Chart.AppVersion .Values.image.tag | toString -}}
{{- end -}}

{{- define "dify.imagePullSecrets" -}}
{{- $secrets := concat (default list .Values.global.imagePullSecrets) -}}
{{- if $secrets }}
imagePullSecrets:
{{- range $secrets }}
  - name: {{ . }}
{{- end }}
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

{{/*
A probe. Args: dict "probe" (values: enabled + timing) "handler" (dict with httpGet/tcpSocket/exec).
Renders nothing when disabled.
*/}}
{{- define "dify.probe" -}}
{{- if .probe.enabled -}}
{{- toYaml (merge (deepCopy .handler) (omit .probe "enabled")) -}}
{{- end -}}
{{- end -}}

{{/* ===== Required values and their checks (messages never echo a secret) ===== */}}

{{- define "dify.postgresqlPassword" -}}
{{- $password := required "postgresql.auth.password is required: PostgreSQL keeps the password it was first initialised with in its PVC, so the chart never generates one at random. Set it once and keep it (deploy.sh takes it from the POSTGRES_PASSWORD environment variable)." .Values.postgresql.auth.password | toString -}}
{{- if regexMatch "[\\s'\"\\\\]" $password -}}
{{- fail "postgresql.auth.password must not contain whitespace, quotes or backslashes: the plugin daemon builds an unquoted libpq DSN (password=...) from it. Use letters, digits and URL-safe symbols." -}}
{{- end -}}
{{- $password -}}
{{- end -}}

{{/*
docs/rules.md#postgresql-secret-rules at render time (helm install/upgrade, --dry-run=server included; lookup is empty under
helm template and --dry-run=client): while the PostgreSQL PVC exists, the password must stay the one in the existing Secret.
It runs whenever the Secret can be looked up, whether or not dify-guard is registered: a server dry-run sends nothing to the
API server, so only this check can keep it from reporting success; a real upgrade is refused here before dify-guard would
see the write. dify-guard still refuses (and audits) every other write of that Secret. The message names objects, never a value.
postgresql.auth.rotatedInDatabase (the operator says the database already has the new password) hands the decision to
dify-guard, which asks the database; it is refused where no dify-guard is registered to ask.
*/}}
{{- define "dify.checkRotationNeedsGuard" -}}
{{- if and .Values.postgresql.auth.rotatedInDatabase (not .Values.webhook.enabled) -}}
{{- fail "postgresql.auth.rotatedInDatabase=true hands the password check to dify-guard, which asks the database whether it accepts the new password; with webhook.enabled=false nothing would check it. Enable the webhook, or keep the old password." -}}
{{- end -}}
{{- end -}}

{{- define "dify.checkPasswordUnderPvc" -}}
{{- $c := include "dify.contract" . | fromJson -}}
{{- $ns := .Release.Namespace -}}
{{- $pvc := include "dify.name" (list . "postgresqlPvc") -}}
{{- $secret := include "dify.name" (list . "postgresqlSecret") -}}
{{- if lookup "v1" "PersistentVolumeClaim" $ns $pvc -}}
{{- $current := index ((lookup "v1" "Secret" $ns $secret).data | default dict) $c.secretKeys.postgresPassword | default "" -}}
{{- if and $current (ne $current (include "dify.postgresqlPassword" . | b64enc)) (not .Values.postgresql.auth.rotatedInDatabase) -}}
{{- fail (printf "postgresql.auth.password differs from the password in Secret %s/%s while PVC %s/%s exists. PostgreSQL keeps the password it was initialised with in that volume and ignores the Secret afterwards, so every Dify component would fail to log in with error 28P01. The chart cannot ask the database whether it already accepts the new password; dify-guard can. Ways out: (1) keep the old password: deploy with the original POSTGRES_PASSWORD (read it back with `kubectl get secret -n %s %s -o jsonpath='{.data.%s}' | base64 -d`); (2) rotate without losing data: change the password in the database first (psql \\password in pod %s-0), then upgrade with --set postgresql.auth.rotatedInDatabase=true, and dify-guard lets the change through only if the database accepts the new password; (3) if the data may be lost, stop PostgreSQL with `kubectl scale statefulset -n %s %s --replicas=0`, delete the PVC, which DELETES ALL DIFY DATA, with `kubectl delete pvc -n %s %s`, then deploy with the new password." $ns $secret $ns $pvc $ns $secret $c.secretKeys.postgresPassword (include "dify.name" (list . "postgresql")) $ns (include "dify.name" (list . "postgresql")) $ns $pvc) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dify.secretKey" -}}
{{- required "secrets.difySecretKey is required (Dify's SECRET_KEY, which signs sessions and tokens). Generate it once, e.g. `openssl rand -hex 32`, and keep it; deploy.sh takes it from the DIFY_SECRET_KEY environment variable." .Values.secrets.difySecretKey | toString -}}
{{- end -}}

{{/* ===== Redis connection (pluginDaemon.redis is the guide's section; every Dify component uses it) ===== */}}

{{- define "dify.redis.host" -}}
{{- if .Values.pluginDaemon.redis.host -}}
{{- .Values.pluginDaemon.redis.host -}}
{{- else if .Values.redis.enabled -}}
{{- include "dify.name" (list . "redisMaster") -}}
{{- else -}}
{{- fail "redis.enabled is false: set pluginDaemon.redis.host (and port/auth) to the Redis every Dify component should use" -}}
{{- end -}}
{{- end -}}

{{- define "dify.redis.port" -}}
{{- $c := include "dify.contract" . | fromJson -}}
{{- default (int $c.redisPort) .Values.pluginDaemon.redis.port | int -}}
{{- end -}}

{{/* The Secret holding the Redis password: an existing one, or the chart's <release>-redis. */}}
{{- define "dify.redis.secretName" -}}
{{- default (include "dify.name" (list . "redisSecret")) .Values.pluginDaemon.redis.existingSecret -}}
{{- end -}}

{{- define "dify.redis.secretKey" -}}
{{- $c := include "dify.contract" . | fromJson -}}
{{- default $c.secretKeys.redisPassword .Values.pluginDaemon.redis.existingSecretPasswordKey -}}
{{- end -}}

{{/*
The chart-managed Redis password: the given one (checked), else the one in the existing <release>-redis
Secret (kept across upgrades), else a new random one. Only called when the chart renders that Secret.
*/}}
{{- define "dify.redis.password" -}}
{{- $c := include "dify.contract" . | fromJson -}}
{{- $given := .Values.pluginDaemon.redis.password | toString -}}
{{- if $given -}}
{{- if not (regexMatch "^[A-Za-z0-9._~-]+$" $given) -}}
{{- fail "pluginDaemon.redis.password may contain only letters, digits and . _ ~ - : Kubernetes expands $(REDIS_PASSWORD) into CELERY_BROKER_URL without URL-encoding" -}}
{{- end -}}
{{- $given -}}
{{- else -}}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace (include "dify.name" (list . "redisSecret"))).data | default dict -}}
{{- $kept := index $existing $c.secretKeys.redisPassword | default "" -}}
{{- if $kept -}}{{- $kept | b64dec -}}{{- else -}}{{- randAlphaNum 32 -}}{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Pod annotations that tell dify-guard which Secret holds the Redis password, when it is not the
default <release>-redis / redis-password (an existing Secret).
*/}}
{{- define "dify.redis.podAnnotations" -}}
{{- if and .Values.pluginDaemon.redis.authEnabled .Values.pluginDaemon.redis.existingSecret -}}
{{- $c := include "dify.contract" . | fromJson -}}
{{ $c.annotations.redisSecretName }}: {{ include "dify.redis.secretName" . | quote }}
{{ $c.annotations.redisSecretKey }}: {{ include "dify.redis.secretKey" . | quote }}
{{- end -}}
{{- end -}}

{{- define "dify.podAnnotations" -}}
{{- $annotations := merge (include "dify.redis.podAnnotations" .root | fromYaml) (default dict .podAnnotations) -}}
{{- if $annotations }}
annotations:
  {{- toYaml $annotations | nindent 2 }}
{{- end }}
{{- end -}}

{{/* ===== Environment lists (YAML arrays; templates parse them with fromYamlArray) ===== */}}

{{/* DB_* of the bundled PostgreSQL. Args: dict "root" $ "database" name. DB_PASSWORD only by secretKeyRef. */}}
{{- define "dify.env.db" -}}
{{- $root := .root -}}
{{- $c := include "dify.contract" $root | fromJson -}}
- name: DB_TYPE
  value: postgresql
- name: DB_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "dify.name" (list $root "postgresqlSecret") }}
      key: {{ $c.secretKeys.postgresUsername }}
- name: {{ $c.env.dbPassword }}
  valueFrom:
    secretKeyRef:
      name: {{ include "dify.name" (list $root "postgresqlSecret") }}
      key: {{ $c.secretKeys.postgresPassword }}
- name: DB_HOST
  value: {{ include "dify.name" (list $root "postgresql") | quote }}
- name: DB_PORT
  value: {{ $root.Values.postgresql.service.port | quote }}
- name: DB_DATABASE
  value: {{ .database | quote }}
{{- end -}}

{{/* REDIS_* then CELERY_BROKER_URL: REDIS_PASSWORD must come first, Kubernetes expands only earlier names. */}}
{{- define "dify.env.redis" -}}
{{- $c := include "dify.contract" . | fromJson -}}
{{- $auth := .Values.pluginDaemon.redis.authEnabled -}}
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
{{- $c := include "dify.contract" . | fromJson -}}
{{- $credentials := ternary (printf ":$(%s)@" $c.env.redisPassword) "" (.Values.pluginDaemon.redis.authEnabled | default false) -}}
- name: {{ $c.env.celeryBrokerUrl }}
  value: {{ printf "redis://%s%s:%s/1" $credentials (include "dify.redis.host" .) (include "dify.redis.port" .) | quote }}
- name: CELERY_BACKEND
  value: redis
- name: BROKER_USE_SSL
  value: "false"
{{- end -}}

{{/* A key of the app Secret (SECRET_KEY, the keys shared with sandbox/plugin daemon, OpenAI). */}}
{{- define "dify.env.appSecret" -}}
{{- $c := include "dify.contract" .root | fromJson -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "dify.name" (list .root "appSecrets") }}
      key: {{ index $c.appSecretKeys .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* Env shared by api, worker, beat and the migration Job (same image, same app factory). */}}
{{- define "dify.env.backend" -}}
{{- $c := include "dify.contract" . | fromJson -}}
{{- $api := include "dify.fullname" (list . "api") -}}
{{- $urls := .Values.dify.urls -}}
- name: LOG_LEVEL
  value: {{ .Values.dify.logLevel | quote }}
- name: DEPLOY_ENV
  value: PRODUCTION
- name: {{ $c.env.migrationEnabled }}
  value: "false"
{{ include "dify.env.appSecret" (dict "root" . "name" "SECRET_KEY" "key" "secretKey") }}
{{ include "dify.env.db" (dict "root" . "database" .Values.postgresql.auth.database) }}
{{ include "dify.env.redis" . }}
{{ include "dify.env.celery" . }}
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
{{ include "dify.env.publicUrls" . }}
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
  value: {{ include "dify.name" (list . "postgresql") | quote }}
- name: PGVECTOR_PORT
  value: {{ .Values.postgresql.service.port | quote }}
- name: PGVECTOR_USER
  valueFrom:
    secretKeyRef:
      name: {{ include "dify.name" (list . "postgresqlSecret") }}
      key: {{ $c.secretKeys.postgresUsername }}
- name: PGVECTOR_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "dify.name" (list . "postgresqlSecret") }}
      key: {{ $c.secretKeys.postgresPassword }}
- name: PGVECTOR_DATABASE
  value: {{ .Values.postgresql.auth.database | quote }}
{{- end }}
{{- end }}
- name: CODE_EXECUTION_ENDPOINT
  value: {{ printf "http://%s:%d" (include "dify.fullname" (list . "sandbox")) (int .Values.sandbox.service.port) | quote }}
{{ include "dify.env.appSecret" (dict "root" . "name" "CODE_EXECUTION_API_KEY" "key" "sandboxApiKey") }}
- name: PLUGIN_DAEMON_URL
  value: {{ printf "http://%s:%d" (include "dify.fullname" (list . "pluginDaemon")) (int .Values.pluginDaemon.service.port) | quote }}
{{ include "dify.env.appSecret" (dict "root" . "name" "PLUGIN_DAEMON_KEY" "key" "pluginDaemonKey") }}
{{ include "dify.env.appSecret" (dict "root" . "name" "INNER_API_KEY_FOR_PLUGIN" "key" "innerApiKeyForPlugin") }}
- name: PLUGIN_MAX_PACKAGE_SIZE
  value: {{ .Values.pluginDaemon.maxPackageSize | int64 | quote }}
- name: MARKETPLACE_ENABLED
  value: {{ .Values.dify.marketplace.enabled | quote }}
- name: MARKETPLACE_API_URL
  value: {{ .Values.dify.marketplace.apiUrl | quote }}
{{- if .Values.ssrfProxy.enabled }}
- name: SSRF_PROXY_HTTP_URL
  value: {{ printf "http://%s:%d" (include "dify.fullname" (list . "ssrfProxy")) (int .Values.ssrfProxy.service.port) | quote }}
- name: SSRF_PROXY_HTTPS_URL
  value: {{ printf "http://%s:%d" (include "dify.fullname" (list . "ssrfProxy")) (int .Values.ssrfProxy.service.port) | quote }}
{{- end }}
{{ include "dify.env.appSecret" (dict "root" . "name" "OPENAI_API_KEY" "key" "openaiApiKey" "optional" true) }}
{{- end -}}

{{/*
Renders an env list after checking that no name appears twice (a duplicate silently wins in
Kubernetes, and was a real bug of a community chart). Args: dict "env" list "where" description.
*/}}
{{- define "dify.renderEnv" -}}
{{- $seen := dict -}}
{{- range .env -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "env var %s is set twice in %s: the chart already sets it; remove it from extraEnv (or use the dedicated value)" .name $.where) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- toYaml .env -}}
{{- end -}}

{{/*
Return the public origin of Dify (scheme://host[:port]): the first dify.urls value set, else the Ingress
host, else the LoadBalancer address; "" when none is known (Dify then shows paths without a host).
*/}}
{{- define "dify.publicOrigin" -}}
{{- $urls := .Values.dify.urls -}}
{{- $lb := .Values.loadBalancer -}}
{{- $explicit := coalesce $urls.serviceApi $urls.appApi $urls.consoleApi $urls.appWeb $urls.consoleWeb -}}
{{- if $explicit -}}
{{- trimSuffix "/" $explicit -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host -}}
{{- else if and $lb.enabled $lb.loadBalancerIP -}}
{{- $ip := splitList "," $lb.loadBalancerIP | first | trim -}}
{{- $host := ternary (printf "[%s]" $ip) $ip (contains ":" $ip) -}}
{{- printf "http://%s%s" $host (ternary "" (printf ":%d" (int $lb.port)) (eq (int $lb.port) 80)) -}}
{{- end -}}
{{- end -}}

{{/*
The public URLs Dify builds for outside callers, never Dify's localhost defaults: TRIGGER_URL (workflow
webhook triggers, /triggers on api), ENDPOINT_URL_TEMPLATE (plugin endpoints, /e/ on the plugin daemon) and
PLUGIN_REMOTE_INSTALL_HOST/PORT (shown for remote plugin debugging: the daemon's TCP port 5003).
*/}}
{{- define "dify.env.publicUrls" -}}
{{- $origin := include "dify.publicOrigin" . -}}
{{- $remote := .Values.pluginDaemon.remoteInstall -}}
- name: TRIGGER_URL
  value: {{ default $origin .Values.dify.urls.trigger | quote }}
- name: ENDPOINT_URL_TEMPLATE
  value: {{ default (printf "%s/e/{hook_id}" $origin) .Values.dify.urls.endpointTemplate | quote }}
- name: PLUGIN_REMOTE_INSTALL_HOST
  value: {{ default (printf "%s.%s.svc" (include "dify.fullname" (list . "pluginDaemon")) .Release.Namespace) $remote.host | quote }}
- name: PLUGIN_REMOTE_INSTALL_PORT
  value: {{ $remote.port | int | quote }}
{{- end -}}

{{/* The routes of Dify's own nginx (docker/nginx/conf.d/default.conf.template), for the Ingress and the proxy. */}}
{{- define "dify.routes" -}}
- {path: /console/api, component: api}
- {path: /api, component: api}
- {path: /v1, component: api}
- {path: /files, component: api}
- {path: /mcp, component: api}
- {path: /triggers, component: api}
- {path: /e/, component: pluginDaemon}
- {path: /explore, component: web}
- {path: /, component: web}
{{- end -}}

{{/* Port of a routed component's Service. Args: list $ key. */}}
{{- define "dify.servicePort" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- (index $root.Values $key).service.port | int -}}
{{- end -}}
