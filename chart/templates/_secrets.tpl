{{/* Values the release's Secrets hold ("dify.validateValues" has checked them; the messages never echo a secret). */}}

{{/* postgresql.auth.password as the PostgreSQL Secret holds it. */}}
{{- define "dify.postgresqlPassword" -}}
{{- .Values.postgresql.auth.password | default "" | toString -}}
{{- end -}}

{{/* secrets.difySecretKey: Dify's SECRET_KEY. */}}
{{- define "dify.secretKey" -}}
{{- .Values.secrets.difySecretKey | default "" | toString -}}
{{- end -}}
