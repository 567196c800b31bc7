{{/*
Every check the chart makes of its values, reported together: each "dify.check.*" below returns its
message, or nothing when the values pass, and "dify.validateValues" collects them in the order listed
there and fails once with all of them (as Bitnami's common chart does with validateValues). The helpers
that render these values check nothing themselves. Messages never echo a secret.
secrets.yaml, which every render includes, calls "dify.validateValues" first; the checks that read the
cluster ("dify.checkPasswordUnderPvc") come after it, as they compare values that must first be valid.
*/}}

{{/* All value checks, one fail for all. Args: list $ $c. */}}
{{- define "dify.validateValues" -}}
{{- $root := index . 0 -}}
{{- $messages := list
  (include "dify.check.releaseName" $root)
  (include "dify.check.postgresqlPassword" $root)
  (include "dify.check.rotationNeedsGuard" $root)
  (include "dify.check.secretKey" $root)
  (include "dify.check.redisHost" $root)
  (include "dify.check.redisPassword" $root)
-}}
{{- range include "dify.env.containers" . | fromYamlArray -}}
{{- $messages = concat $messages (include "dify.check.envNamesOnce" . | fromJsonArray) -}}
{{- end -}}
{{- $messages = concat $messages (list
  (include "dify.check.ingressHost" $root)
  (include "dify.check.monitoringNeedsGuard" $root)
  (include "dify.check.guardTls" $root)
  (include "dify.check.guardCaBundle" $root)
  (include "dify.check.verifyTimeout" $root)
) | compact -}}
{{- if $messages -}}
{{- fail (printf "values to fix (%d):\n- %s" (len $messages) (join "\n- " $messages)) -}}
{{- end -}}
{{- end -}}

{{/*
Release names longer than this would push an object name or label over 63 characters
(e.g. the StatefulSet pod's controller-revision-hash label), and dify-guard expands the same
templates without truncating, so the chart refuses instead of truncating.
*/}}
{{- define "dify.check.releaseName" -}}
{{- if gt (len .Release.Name) 40 -}}
{{- printf "release name %q is %d characters long; use at most 40 (object names such as <release>-plugin-daemon and <release>-postgresql-0 must stay valid Kubernetes names, and dify-guard derives them from the release name without truncation)" .Release.Name (len .Release.Name) -}}
{{- end -}}
{{- end -}}

{{/* postgresql.auth.password: given (the chart never generates it), and usable in the plugin daemon's libpq DSN. */}}
{{- define "dify.check.postgresqlPassword" -}}
{{- $password := include "dify.postgresqlPassword" . -}}
{{- if not $password -}}
postgresql.auth.password is required: PostgreSQL keeps the password it was first initialised with in its PVC, so the chart never generates one at random. Set it once and keep it (deploy.sh takes it from the POSTGRES_PASSWORD environment variable).
{{- else if regexMatch "[\\s'\"\\\\]" $password -}}
postgresql.auth.password must not contain whitespace, quotes or backslashes: the plugin daemon builds an unquoted libpq DSN (password=...) from it. Use letters, digits and URL-safe symbols.
{{- end -}}
{{- end -}}

{{/*
postgresql.auth.rotatedInDatabase (the operator says the database already has the new password) hands the
decision to dify-guard, which asks the database; it is refused where no dify-guard is registered to ask.
*/}}
{{- define "dify.check.rotationNeedsGuard" -}}
{{- if and .Values.postgresql.auth.rotatedInDatabase (not .Values.webhook.enabled) -}}
postgresql.auth.rotatedInDatabase=true hands the password check to dify-guard, which asks the database whether it accepts the new password; with webhook.enabled=false nothing would check it. Enable the webhook, or keep the old password.
{{- end -}}
{{- end -}}

{{- define "dify.check.secretKey" -}}
{{- if not (include "dify.secretKey" .) -}}
secrets.difySecretKey is required (Dify's SECRET_KEY, which signs sessions and tokens). Generate it once, e.g. `openssl rand -hex 32`, and keep it; deploy.sh takes it from the DIFY_SECRET_KEY environment variable.
{{- end -}}
{{- end -}}

{{/* Every Dify component needs a Redis: the bundled one or pluginDaemon.redis.host. */}}
{{- define "dify.check.redisHost" -}}
{{- if not (or .Values.pluginDaemon.redis.host .Values.redis.enabled) -}}
redis.enabled is false: set pluginDaemon.redis.host (and port/auth) to the Redis every Dify component should use
{{- end -}}
{{- end -}}

{{/* A given Redis password, where the chart renders its Secret ("dify.redis.password"). */}}
{{- define "dify.check.redisPassword" -}}
{{- $redis := .Values.pluginDaemon.redis -}}
{{- $given := $redis.password | default "" | toString -}}
{{- if and $redis.authEnabled (not $redis.existingSecret) $given (not (regexMatch "^[A-Za-z0-9._~-]+$" $given)) -}}
pluginDaemon.redis.password may contain only letters, digits and . _ ~ - : Kubernetes expands $(REDIS_PASSWORD) into CELERY_BROKER_URL without URL-encoding
{{- end -}}
{{- end -}}

{{/*
No env name twice in a container (a duplicate silently wins in Kubernetes, and was a real bug of a community
chart). Args: one entry of "dify.env.containers" (dict "container" name "env" list). Returns a JSON list of
messages, one for each name set twice.
*/}}
{{- define "dify.check.envNamesOnce" -}}
{{- $seen := dict -}}
{{- $messages := list -}}
{{- range .env -}}
{{- if hasKey $seen .name -}}
{{- $messages = append $messages (printf "env var %s is set twice in the %s container: the chart already sets it; remove it from extraEnv (or use the dedicated value)" .name $.container) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- $messages | toJson -}}
{{- end -}}

{{- define "dify.check.ingressHost" -}}
{{- if and .Values.ingress.enabled .Values.ingress.tls.enabled (not .Values.ingress.host) -}}
ingress.tls.enabled needs ingress.host (the certificate's host name)
{{- end -}}
{{- end -}}

{{/* The monitoring objects watch the dify-guard that this release runs in the cluster. */}}
{{- define "dify.check.monitoringNeedsGuard" -}}
{{- $m := .Values.monitoring -}}
{{- $wanted := or $m.serviceMonitor.enabled $m.prometheusRule.enabled $m.grafanaDashboard.enabled -}}
{{- if and $wanted (or (not .Values.webhook.enabled) .Values.webhook.url) -}}
monitoring.serviceMonitor / prometheusRule / grafanaDashboard watch the dify-guard that this release runs in the cluster, but webhook.enabled is false or webhook.url is set (no dify-guard Deployment or Service here): turn monitoring on in the release that installs dify-guard
{{- end -}}
{{- end -}}

{{/* webhook.tls.mode=existingSecret names the Secret it mounts ("dify.guard.tlsSecretName"). */}}
{{- define "dify.check.guardTls" -}}
{{- $w := .Values.webhook -}}
{{- if and $w.enabled (not $w.url) (eq $w.tls.mode "existingSecret") (not $w.tls.existingSecret) -}}
webhook.tls.existingSecret is required when webhook.tls.mode is existingSecret (a kubernetes.io/tls Secret with tls.crt and tls.key)
{{- end -}}
{{- end -}}

{{/* The CA the API server trusts, wherever the chart does not make the certificate itself. */}}
{{- define "dify.check.guardCaBundle" -}}
{{- $w := .Values.webhook -}}
{{- $ca := include "dify.guard.caBundleValue" . -}}
{{- if and $w.enabled $w.url (not $ca) -}}
webhook.caBundle is required with webhook.url: the CA (PEM or base64 PEM) that signed the certificate of the dify-guard running at that URL
{{- else if and $w.enabled (not $w.url) (eq $w.tls.mode "existingSecret") (not $ca) -}}
webhook.caBundle is required with webhook.tls.mode=existingSecret: the CA (PEM or base64 PEM) that signed the certificate in webhook.tls.existingSecret
{{- end -}}
{{- end -}}

{{/* dify-guard's database check runs inside the API server's call to it: it must end first. */}}
{{- define "dify.check.verifyTimeout" -}}
{{- $w := .Values.webhook -}}
{{- $verifyMs := int $w.postgresql.verifyTimeoutMs -}}
{{- if and $w.enabled (not $w.url) (ge $verifyMs (mul (int $w.timeoutSeconds) 1000 | int)) -}}
{{- printf "webhook.postgresql.verifyTimeoutMs (%d) must be below webhook.timeoutSeconds (%d s): %s"
  $verifyMs (int $w.timeoutSeconds) "the database check runs inside the API server's call to dify-guard" -}}
{{- end -}}
{{- end -}}

{{/*
docs/rules.md#postgresql-secret-rules at render time (helm install/upgrade, --dry-run=server included; lookup is empty under
helm template and --dry-run=client): while the PostgreSQL PVC exists, the password must stay the one in the existing Secret.
It runs whenever the Secret can be looked up, whether or not dify-guard is registered: a server dry-run sends nothing to the
API server, so only this check can keep it from reporting success; a real upgrade is refused here before dify-guard would
see the write. dify-guard still refuses (and audits) every other write of that Secret. The message names objects, never a value.
It stays apart from "dify.validateValues": it asks the cluster, and compares a password that those checks must first
have found usable. Args: list $ $c.
*/}}
{{- define "dify.checkPasswordUnderPvc" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $ns := $root.Release.Namespace -}}
{{- $pvc := include "dify.name" (list $root $c "postgresqlPvc") -}}
{{- $secret := include "dify.name" (list $root $c "postgresqlSecret") -}}
{{- $postgresql := include "dify.name" (list $root $c "postgresql") -}}
{{- if lookup "v1" "PersistentVolumeClaim" $ns $pvc -}}
{{- $current := index ((lookup "v1" "Secret" $ns $secret).data | default dict) $c.secretKeys.postgresPassword | default "" -}}
{{- if and $current (ne $current (include "dify.postgresqlPassword" $root | b64enc)) (not $root.Values.postgresql.auth.rotatedInDatabase) -}}
{{- fail (printf "postgresql.auth.password differs from the password in Secret %s/%s while PVC %s/%s exists. PostgreSQL keeps the password it was initialised with in that volume and ignores the Secret afterwards, so every Dify component would fail to log in with error 28P01. The chart cannot ask the database whether it already accepts the new password; dify-guard can. Ways out: (1) keep the old password: deploy with the original POSTGRES_PASSWORD (read it back with `kubectl get secret -n %s %s -o jsonpath='{.data.%s}' | base64 -d`); (2) rotate without losing data: change the password in the database first (psql \\password in pod %s-0), then upgrade with --set postgresql.auth.rotatedInDatabase=true, and dify-guard lets the change through only if the database accepts the new password; (3) if the data may be lost, stop PostgreSQL with `kubectl scale statefulset -n %s %s --replicas=0`, delete the PVC, which DELETES ALL DIFY DATA, with `kubectl delete pvc -n %s %s`, then deploy with the new password." $ns $secret $ns $pvc $ns $secret $c.secretKeys.postgresPassword $postgresql $ns $postgresql $ns $pvc) -}}
{{- end -}}
{{- end -}}
{{- end -}}
