{{/* Labels: every key and fixed value comes from the contract ($c, read once by the calling template). */}}

{{- define "dify.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of a Dify component (immutable in Deployments/StatefulSets). Args: list $ $c key. */}}
{{- define "dify.selectorLabels" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{ index $c.labels "name" }}: {{ $c.values.difyName }}
{{ index $c.labels "instance" }}: {{ $root.Release.Name }}
{{ index $c.labels "component" }}: {{ include "dify.component" . }}
{{- end -}}

{{/* All labels of a Dify component's objects and pods, `app: <release>-<component>` included. Args: list $ $c key. */}}
{{- define "dify.labels" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{ include "dify.selectorLabels" . }}
{{ index $c.labels "partOf" }}: {{ $c.values.partOf }}
{{ index $c.labels "managedBy" }}: {{ $root.Release.Service }}
{{ index $c.labels "version" }}: {{ $root.Chart.AppVersion | quote }}
{{ index $c.labels "app" }}: {{ include "dify.expand" (dict "template" $c.names.appLabel "release" $root.Release.Name "component" (include "dify.component" .)) }}
helm.sh/chart: {{ include "dify.chart" $root }}
{{- end -}}

{{/* Labels of release-wide objects that belong to no single component (e.g. the app Secret, the Ingress). Args: list $ $c. */}}
{{- define "dify.commonLabels" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{ index $c.labels "name" }}: {{ $c.values.difyName }}
{{ index $c.labels "instance" }}: {{ $root.Release.Name }}
{{ index $c.labels "partOf" }}: {{ $c.values.partOf }}
{{ index $c.labels "managedBy" }}: {{ $root.Release.Service }}
{{ index $c.labels "version" }}: {{ $root.Chart.AppVersion | quote }}
helm.sh/chart: {{ include "dify.chart" $root }}
{{- end -}}

{{/* Selector labels of dify-guard's pods: name=dify-guard, so its own webhooks never select them. Args: list $ $c. */}}
{{- define "dify.guard.selectorLabels" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{ index $c.labels "name" }}: {{ $c.values.guardName }}
{{ index $c.labels "instance" }}: {{ $root.Release.Name }}
{{ index $c.labels "component" }}: {{ $c.components.webhook }}
{{- end -}}

{{/* All labels of dify-guard's objects. Args: list $ $c. */}}
{{- define "dify.guard.labels" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{ include "dify.guard.selectorLabels" . }}
{{ index $c.labels "partOf" }}: {{ $c.values.partOf }}
{{ index $c.labels "managedBy" }}: {{ $root.Release.Service }}
{{ index $c.labels "version" }}: {{ $root.Chart.Version | quote }}
{{ index $c.labels "app" }}: {{ include "dify.name" (list $root $c "guard") }}
helm.sh/chart: {{ include "dify.chart" $root }}
{{- end -}}
