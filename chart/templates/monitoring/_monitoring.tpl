{{/*
Monitoring of dify-guard (all off by default): a ServiceMonitor, a PrometheusRule and a Grafana dashboard.
The alert rules are defined once, in "dify.monitoring.ruleGroups"; the PrometheusRule renders them and the
chart's tests run `promtool check rules` and `promtool test rules` on that same rendered text. That this release
runs the dify-guard they watch is checked with the other values ("dify.check.monitoringNeedsGuard", _checks.tpl).
*/}}

{{/* Return the PromQL label matchers of dify-guard's series: the seriesSelector value, or the ServiceMonitor's job and namespace. Args: list $ $c. */}}
{{- define "dify.monitoring.seriesSelector" -}}
{{- $root := index . 0 -}}
{{- $serviceMonitor := printf "job=%q,namespace=%q" (include "dify.guard.name" .) $root.Release.Namespace -}}
{{- default $serviceMonitor $root.Values.monitoring.prometheusRule.seriesSelector -}}
{{- end -}}

{{/*
Return a PromQL expression: the alert's condition on how much a counter grew within its window, by the given
labels. Args: dict "metric" "selector" "by" "alert" (values with window and threshold). A labelled prom-client
counter appears only at its first increment, already at 1, which increase() cannot see; so a series that is
new within the window and above 0 counts with its value, and any other series with its increase.
*/}}
{{- define "dify.monitoring.counterGrowth" -}}
{{- $series := printf "%s{%s}" .metric .selector -}}
sum by ({{ .by }}) (
  ({{ $series }} > 0 unless {{ $series }} offset {{ .alert.window }})
  or
  increase({{ $series }}[{{ .alert.window }}])
)
> {{ .alert.threshold }}
{{- end -}}

{{/* Return a Prometheus alert template expression, e.g. {{ $labels.reason }}, escaped from Helm. Args: the text inside the braces. */}}
{{- define "dify.monitoring.prom" -}}
{{- printf "{{ %s }}" . -}}
{{- end -}}

{{/* Return the rule groups of the PrometheusRule (the one definition of dify-guard's alerts). Args: list $ $c. */}}
{{- define "dify.monitoring.ruleGroups" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- $a := $root.Values.monitoring.prometheusRule.alerts -}}
{{- $sel := include "dify.monitoring.seriesSelector" . -}}
{{- $ns := $root.Release.Namespace -}}
{{- $guard := include "dify.guard.name" . -}}
{{- $runbook := $root.Values.monitoring.prometheusRule.runbookBaseUrl -}}
{{- $pods := printf "%s=%s,%s=%s" (index $c.labels "name") $c.values.guardName (index $c.labels "instance") $root.Release.Name -}}
{{- $logs := printf "kubectl logs -n %s -l %s --tail=-1 --since=1h" $ns $pods -}}
{{- $reason := include "dify.monitoring.prom" "$labels.reason" -}}
{{- $denied := $a.secretChangesDenied -}}
{{- $replaced := $a.secretReplacedUnderPvc -}}
{{- $literal := $a.literalPasswordInTemplate -}}
{{- $migration := $a.migrationEnabledInTemplate -}}
{{- $findings := "dify_guard_template_findings_total" -}}
{{- $kind := include "dify.monitoring.prom" "$labels.kind" -}}
{{- $mode := include "dify.monitoring.prom" "$labels.mode" -}}
- name: dify-guard
  rules:
    - alert: DifyGuardUnavailable
      expr: absent(up{ {{- $sel -}} } == 1)
      for: {{ $a.unavailable.for }}
      labels:
        severity: {{ $a.unavailable.severity }}
      annotations:
        summary: dify-guard ({{ $ns }}/{{ $guard }}) の応答がありません
        description: >-
          {{ $a.unavailable.for }} 以上、dify-guard のどの Pod からもメトリクスを取得できていません。この間、PostgreSQL Secret の
          パスワード変更は拒否され、webhook.pods.failurePolicy=Fail なら Dify の Pod も作成されません。
          確認: `kubectl get pods -n {{ $ns }} -l {{ $pods }}`、
          `kubectl describe deploy -n {{ $ns }} {{ $guard }}`、
          `kubectl get events -n {{ $ns }} --field-selector type=Warning`、
          `{{ $logs }}`
        {{- with $runbook }}
        runbook_url: {{ printf "%s#difyguardunavailable" . | quote }}
        {{- end }}
    - alert: DifyGuardPvcCacheNotSynced
      expr: dify_guard_pvc_cache_synced{ {{- $sel -}} } == 0
      for: {{ $a.pvcCacheNotSynced.for }}
      labels:
        severity: {{ $a.pvcCacheNotSynced.severity }}
      annotations:
        summary: dify-guard {{ include "dify.monitoring.prom" "$labels.pod" }} の PVC キャッシュが同期していません
        description: >-
          {{ $a.pvcCacheNotSynced.for }} 以上、PVC の list/watch が同期していません。PVC の有無を確かめられないため、この Pod は
          PostgreSQL Secret のパスワード変更を「確認できない」として拒否します（それ以外の要求は通ります）。
          確認: `kubectl logs -n {{ $ns }} {{ include "dify.monitoring.prom" "$labels.pod" }} --since=1h | grep -i pvc`、
          PVC を読む権限 `kubectl auth can-i watch persistentvolumeclaims --all-namespaces --as=system:serviceaccount:{{ $ns }}:{{ $guard }}`
        {{- with $runbook }}
        runbook_url: {{ printf "%s#difyguardpvccachenotsynced" . | quote }}
        {{- end }}
    - alert: DifyGuardSecretChangesDenied
      expr: |-
        {{- $condition := dict "metric" "dify_guard_secret_denials_total" "selector" $sel "by" "reason" "alert" $denied }}
        {{- include "dify.monitoring.counterGrowth" $condition | nindent 8 }}
      labels:
        severity: {{ $denied.severity }}
      annotations:
        summary: PostgreSQL Secret の変更が拒否されました（{{ $reason }}）
        description: >-
          直近 {{ $denied.window }} の件数がしきい値 {{ $denied.threshold }} 件を超えました。
          dify-guard が PostgreSQL Secret の変更を理由 {{ $reason }} で拒否しました。
          誰が何をしたかは監査ログと Secret の Warning Event にあります:
          `{{ $logs }} | grep '"audit":true' | grep '"reason":"{{ $reason }}"'`、
          `kubectl get events -A --field-selector type=Warning,reason={{ $reason }}`。
          PVC が残る間はパスワードを変えられません（chart/README.md の「パスワード変更時の注意事項」）。
        {{- with $runbook }}
        runbook_url: {{ printf "%s#difyguardsecretchangesdenied" . | quote }}
        {{- end }}
    - alert: DifyGuardSecretReplacedUnderPvc
      expr: |-
        {{- $condition := dict "metric" "dify_guard_secret_audited_allowed_total" "selector" $sel "by" "reason" "alert" $replaced }}
        {{- include "dify.monitoring.counterGrowth" $condition | nindent 8 }}
      labels:
        severity: {{ $replaced.severity }}
      annotations:
        summary: PVC が残ったまま PostgreSQL Secret が削除または再作成されました（{{ $reason }}）
        description: >-
          直近 {{ $replaced.window }} の件数がしきい値 {{ $replaced.threshold }} 件を超えました。
          PostgreSQL の PVC が残ったまま Secret の削除（DeleteUnderPvc）または
          作成（CreateOverPvc）が許可されました。PostgreSQL は PVC に最初のパスワードを保持するため、新しい Secret のパスワードが
          違えば Dify は 28P01 で接続できなくなります。誰が行ったか:
          `{{ $logs }} | grep '"audit":true' | grep '"reason":"{{ $reason }}"'`、
          `kubectl get events -A --field-selector type=Warning,reason={{ $reason }}`。
          新しい Secret が元のパスワードであることを確かめてください
          （chart/README.md の「Plugin Daemon の DB 接続エラー (28P01) を解消する場合」）。
        {{- with $runbook }}
        runbook_url: {{ printf "%s#difyguardsecretreplacedunderpvc" . | quote }}
        {{- end }}
    - alert: DifyGuardLiteralPasswordInTemplate
      expr: |-
        {{- $condition := dict "metric" $findings "selector" (printf "%s,finding=%q" $sel "literal_password") "by" "kind, mode" }}
        {{- include "dify.monitoring.counterGrowth" (set $condition "alert" $literal) | nindent 8 }}
      labels:
        severity: {{ $literal.severity }}
      annotations:
        summary: Dify の {{ $kind }} のテンプレートにパスワードがリテラルで書かれています（{{ $mode }}）
        description: >-
          直近 {{ $literal.window }} の件数がしきい値 {{ $literal.threshold }} 件を超えました。
          Dify の {{ $kind }} のテンプレート（または Pod の last-applied-configuration 注釈）に
          データベースまたは Redis のパスワードがリテラルで書かれていました（mode={{ $mode }}: warn なら保存済み、deny なら拒否）。
          warn の場合その値は etcd に残り、そのオブジェクトを get できる人に読めます。対象と変数名（値は出ません）:
          `{{ $logs }} | grep '"audit":true' | grep literal_password`。
          値を Secret に移し secretKeyRef で参照してから、パスワードの変更を検討してください。
        {{- with $runbook }}
        runbook_url: {{ printf "%s#difyguardliteralpasswordintemplate" . | quote }}
        {{- end }}
    - alert: DifyGuardMigrationEnabledInTemplate
      expr: |-
        {{- $condition := dict "metric" $findings "selector" (printf "%s,finding=%q" $sel "migration_enabled") "by" "kind, mode" }}
        {{- include "dify.monitoring.counterGrowth" (set $condition "alert" $migration) | nindent 8 }}
      labels:
        severity: {{ $migration.severity }}
      annotations:
        summary: Dify の {{ $kind }} のテンプレートで MIGRATION_ENABLED が "false" ではありません（{{ $mode }}）
        description: >-
          直近 {{ $migration.window }} の件数がしきい値 {{ $migration.threshold }} 件を超えました。
          Dify の {{ $kind }} のテンプレートに MIGRATION_ENABLED が
          "false" 以外で書かれていました（mode={{ $mode }}）。Pod 作成時には dify-guard が "false" に直しますが、テンプレートの作成元
          （別のチャートや手作業の manifest）を直してください。対象:
          `{{ $logs }} | grep '"audit":true' | grep migration_enabled`
        {{- with $runbook }}
        runbook_url: {{ printf "%s#difyguardmigrationenabledintemplate" . | quote }}
        {{- end }}
{{- end -}}
