{{/* Dify's public origin and routes, for the env of the backend, the Ingress, the proxy and NOTES.txt. */}}

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
