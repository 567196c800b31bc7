{{/* dify-guard's object name (<release>-dify-guard) and its Service DNS names. Args: list $ $c (both). */}}
{{- define "dify.guard.name" -}}
{{- include "dify.name" (list (index . 0) (index . 1) "guard") -}}
{{- end -}}

{{- define "dify.guard.dnsNames" -}}
{{- $svc := include "dify.guard.name" . -}}
{{- $ns := (index . 0).Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson -}}
{{- end -}}

{{/* The Secret that holds dify-guard's serving certificate (mounted at /etc/dify-guard/tls). Args: list $ $c. */}}
{{- define "dify.guard.tlsSecretName" -}}
{{- $root := index . 0 -}}
{{- if eq $root.Values.webhook.tls.mode "existingSecret" -}}
{{- $root.Values.webhook.tls.existingSecret -}}
{{- else -}}
{{- include "dify.name" (list $root (index . 1) "guardTls") -}}
{{- end -}}
{{- end -}}

{{/* webhook.caBundle as the API server wants it (base64 of PEM); accepts PEM or base64 PEM. */}}
{{- define "dify.guard.caBundleValue" -}}
{{- $ca := .Values.webhook.caBundle | toString | trim -}}
{{- if hasPrefix "-----BEGIN" $ca -}}
{{- $ca | b64enc -}}
{{- else -}}
{{- $ca -}}
{{- end -}}
{{- end -}}

{{- define "dify.guard.dnsAnnotation" -}}dify-guard.io/tls-dns-names{{- end -}}

{{/*
Helm-generated TLS material. Args: dict "root" $ "c" $c "existing" (the looked-up Secret, or empty).
Reuses the existing Secret when it has a CA, a certificate and a key for the same DNS names, so an
upgrade keeps the CA that the webhook configurations trust; otherwise generates a new CA and a
certificate signed by it. Returns YAML: caCrt, tlsCrt, tlsKey (base64) and reused (bool).
*/}}
{{- define "dify.guard.tlsMaterial" -}}
{{- $root := .root -}}
{{- $dnsNames := include "dify.guard.dnsNames" (list $root .c) | fromJsonArray -}}
{{- $data := (.existing | default dict).data | default dict -}}
{{- $annotations := ((.existing | default dict).metadata | default dict).annotations | default dict -}}
{{- $sameNames := eq (index $annotations (include "dify.guard.dnsAnnotation" $root) | default "") (join "," $dnsNames) -}}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") $sameNames }}
caCrt: {{ index $data "ca.crt" }}
tlsCrt: {{ index $data "tls.crt" }}
tlsKey: {{ index $data "tls.key" }}
reused: true
{{- else }}
{{- $days := int $root.Values.webhook.tls.validityDays -}}
{{- $ca := genCAWithKey (printf "%s-ca" (include "dify.guard.name" (list $root .c))) $days (genPrivateKey "ecdsa") -}}
{{- $cert := genSignedCertWithKey (index $dnsNames 2) nil $dnsNames $days $ca (genPrivateKey "ecdsa") }}
caCrt: {{ $ca.Cert | b64enc }}
tlsCrt: {{ $cert.Cert | b64enc }}
tlsKey: {{ $cert.Key | b64enc }}
reused: false
{{- end }}
{{- end -}}

{{/* clientConfig of a webhook. Args: dict "root" $ "c" $c "path" path "caBundle" base64 (may be empty). */}}
{{- define "dify.guard.clientConfig" -}}
{{- $root := .root -}}
{{- if $root.Values.webhook.url }}
url: {{ printf "%s%s" (trimSuffix "/" $root.Values.webhook.url) .path | quote }}
{{- else }}
service:
  name: {{ include "dify.guard.name" (list $root .c) }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ .path | quote }}
  port: 443
{{- end }}
{{- with .caBundle }}
caBundle: {{ . }}
{{- end }}
{{- end -}}

{{/* Never dify-guard's own pods and objects (label name=dify-guard). Args: list $ $c. */}}
{{- define "dify.guard.notGuardSelector" -}}
{{- $c := index . 1 -}}
matchExpressions:
  - key: {{ $c.labels.name }}
    operator: NotIn
    values:
      - {{ $c.values.guardName }}
{{- end -}}

{{/* Never kube-system, nor the namespaces listed in webhook.excludedNamespaces. */}}
{{- define "dify.guard.namespaceSelector" -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values:
      {{- toYaml (uniq (prepend (default list .Values.webhook.excludedNamespaces) "kube-system")) | nindent 6 }}
{{- end -}}

{{/* Repository paths of Dify images (JSON list): the contract's, then webhook.difyImages, without repeats. Args: list $ $c. */}}
{{- define "dify.guard.difyImages" -}}
{{- $c := index . 1 -}}
{{- concat $c.difyImages (default list (index . 0).Values.webhook.difyImages) | uniq | toJson -}}
{{- end -}}

{{/* The regular expression an image reference of one of those paths matches (src/admission/dify-containers.ts builds the same). Args: list $ $c. */}}
{{- define "dify.guard.difyImagePattern" -}}
{{- $quoted := list -}}
{{- range (include "dify.guard.difyImages" . | fromJsonArray) -}}
{{- $quoted = append $quoted (regexQuoteMeta .) -}}
{{- end -}}
{{- printf "^(.*/)?(%s)(:[^/@]*)?(@.+)?$" (join "|" $quoted) -}}
{{- end -}}

{{/*
CEL that is true for a Dify pod (or pod template) at `path`: this chart's labels with a component the
pod rules cover, or a container / init container that runs a Dify image or declares a setting only
Dify reads. src/admission/dify-containers.ts decides the same. Args: dict "root" $ "c" $c "path" CEL expression.
*/}}
{{- define "dify.guard.difyPodCel" -}}
{{- $c := .c -}}
{{- $p := .path -}}
{{- $labels := printf "%s.metadata.labels" $p -}}
{{- $chart := printf "(has(%s.metadata.labels) && %s in %s && %s[%s] == %s && %s in %s && %s[%s] in %s)"
  $p ($c.labels.name | toJson) $labels $labels ($c.labels.name | toJson) ($c.values.difyName | toJson)
  ($c.labels.component | toJson) $labels $labels ($c.labels.component | toJson) ($c.podRules.injectCredentials | toJson) -}}
{{- $container := printf "(has(c.image) && c.image.matches(%s)) || (has(c.env) && c.env.exists(e, e.name in %s))"
  (include "dify.guard.difyImagePattern" (list .root $c) | toJson) ($c.difyOnlySettings | toJson) -}}
{{- printf "%s || %s.spec.containers.exists(c, %s) || (has(%s.spec.initContainers) && %s.spec.initContainers.exists(c, %s))"
  $chart $p $container $p $p $container -}}
{{- end -}}
