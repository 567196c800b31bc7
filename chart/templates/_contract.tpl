{{/*
Naming contract shared with dify-guard: chart/files/contract.json is the one source of every
label key, name template, Secret key, env var name and webhook name. Each template reads it once, at its
top, with `$c := include "dify.contract" . | fromJson`, and hands $c to the helpers that need it:
(list $ $c key) for the helpers below and the label helpers, "c" $c in the helpers that take a dict.
Templates never repeat those strings.
*/}}

{{/* The contract as JSON (read it once per template: `$c := include "dify.contract" . | fromJson`). */}}
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

{{/* A named object of the contract (contract.names[key]) for this release. Args: list $ $c key. */}}
{{- define "dify.name" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $key := index . 2 -}}
{{- $template := index $c.names $key -}}
{{- if not $template -}}{{- fail (printf "contract.names has no %q" $key) -}}{{- end -}}
{{- include "dify.expand" (dict "template" $template "release" $root.Release.Name) -}}
{{- end -}}

{{/* The component's label value (contract.components[key]). Args: list $ $c key. */}}
{{- define "dify.component" -}}
{{- $c := index . 1 -}}
{{- $key := index . 2 -}}
{{- $component := index $c.components $key -}}
{{- if not $component -}}{{- fail (printf "contract.components has no %q" $key) -}}{{- end -}}
{{- $component -}}
{{- end -}}

{{/* Object name of a Dify component: contract.names.component, e.g. dify-plugin-daemon. Args: list $ $c key. */}}
{{- define "dify.fullname" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- include "dify.expand" (dict "template" $c.names.component "release" $root.Release.Name "component" (include "dify.component" .)) -}}
{{- end -}}
