#!/usr/bin/env bash
# Dify (with dify-guard) をインストール/アップグレードする: `helm upgrade --install` の薄いラッパー。
# 秘密情報は環境変数から受け取り、0600 の一時ファイル経由で `helm --set-file` に渡す
# (helm のコマンドライン、つまり `ps` には現れない)。一時ファイルは終了時に削除する。
set -euo pipefail

chart_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
helm_bin=${HELM:-helm}
kubectl_bin=${KUBECTL:-kubectl}

usage() {
  cat <<'EOF'
使い方: ./deploy.sh [オプション]

Dify Community Edition と dify-guard を `helm upgrade --install --create-namespace` で導入/更新します。

必須の環境変数:
  POSTGRES_PASSWORD   PostgreSQL のパスワード (固定。ランダム生成はしません)
  DIFY_SECRET_KEY     Dify の SECRET_KEY (例: openssl rand -hex 32。毎回同じ値を使うこと)

任意の環境変数:
  REDIS_PASSWORD      Redis のパスワード (英数字と . _ ~ - のみ)。Redis 認証は既定で有効です。
                      未設定なら初回インストール時にチャートが生成し、以後は Secret <release>-redis の値を使い続けます
  OPENAI_API_KEY      --openai-api-key の代わり (コマンドラインに鍵を残さない)
  KUBECONFIG          接続先クラスタ
  HELM, KUBECTL       helm / kubectl のパス (既定: PATH 上の helm, kubectl)

オプション:
  --image-tag TAG         Dify のイメージタグ (例: 1.11.4。既定: Chart の appVersion)
  --openai-api-key KEY    OpenAI API キー (Secret <release>-app-secrets に保存)
  -n, --namespace NS      Namespace (既定: dify)
  -r, --release NAME      リリース名 (既定: dify)
  -f, --values FILE       追加の values ファイル (複数可)
      --set KEY=VALUE     helm にそのまま渡す (複数可)
      --set-string KEY=VALUE
      --timeout DURATION  helm の待ち時間 (migration Job を含む。既定: 20m)
      --dry-run           実行せず、実行する helm コマンドを表示 (秘密情報は *** で伏せる)
  -h, --help              このヘルプ

例:
  export DIFY_SECRET_KEY=$(openssl rand -hex 32)
  export POSTGRES_PASSWORD='your-fixed-password'
  ./deploy.sh --image-tag 1.11.4 --openai-api-key sk-xxx
EOF
}

die() { printf 'エラー: %s\n' "$*" >&2; exit 1; }
bad_usage() { printf 'エラー: %s\n詳しくは ./deploy.sh --help\n' "$*" >&2; exit 2; }
warn() { printf '警告: %s\n' "$*" >&2; }
note() { printf '%s\n' "$*" >&2; }

namespace=dify
release=dify
image_tag=
openai_api_key=${OPENAI_API_KEY:-}
timeout=20m
dry_run=false
passthrough=()

need_value() {
  if [ "$#" -lt 2 ] || [ -z "$2" ]; then bad_usage "$1 には値が必要です"; fi
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --image-tag) need_value "$@"; image_tag=$2; shift 2 ;;
    --image-tag=*) image_tag=${1#*=}; shift ;;
    --openai-api-key) need_value "$@"; openai_api_key=$2; shift 2 ;;
    --openai-api-key=*) openai_api_key=${1#*=}; shift ;;
    -n|--namespace) need_value "$@"; namespace=$2; shift 2 ;;
    --namespace=*) namespace=${1#*=}; shift ;;
    -r|--release) need_value "$@"; release=$2; shift 2 ;;
    --release=*) release=${1#*=}; shift ;;
    -f|--values) need_value "$@"; [ -r "$2" ] || bad_usage "values ファイル $2 を読めません"; passthrough+=(--values "$2"); shift 2 ;;
    --values=*) [ -r "${1#*=}" ] || bad_usage "values ファイル ${1#*=} を読めません"; passthrough+=(--values "${1#*=}"); shift ;;
    --set|--set-string) need_value "$@"; [[ "$2" == *=* ]] || bad_usage "$1 は KEY=VALUE の形で指定してください"; passthrough+=("$1" "$2"); shift 2 ;;
    --timeout) need_value "$@"; timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) bad_usage "不明な引数: $1" ;;
  esac
done

[[ "$namespace" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || bad_usage "namespace '$namespace' は Kubernetes の名前として不正です"
[[ "$release" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || bad_usage "リリース名 '$release' は Kubernetes の名前として不正です"
[[ "$timeout" =~ ^[0-9]+(s|m|h)$ ]] || bad_usage "--timeout は 300s, 20m, 1h のように指定してください"

[ -n "${POSTGRES_PASSWORD:-}" ] || die "POSTGRES_PASSWORD が設定されていません。PostgreSQL のパスワードは固定です (ランダム生成はしません)。
  export POSTGRES_PASSWORD='your-fixed-password'
を設定してから再実行してください。既存の PVC data-${release}-postgresql-0 がある場合は、初回と同じパスワードが必要です。"
[ -n "${DIFY_SECRET_KEY:-}" ] || die "DIFY_SECRET_KEY が設定されていません (Dify の SECRET_KEY)。初回は
  export DIFY_SECRET_KEY=\$(openssl rand -hex 32)
で生成し、以後は同じ値を使ってください (変えるとログイン中のセッションが無効になります)。"

if [ -n "${REDIS_PASSWORD:-}" ] && ! [[ "$REDIS_PASSWORD" =~ ^[A-Za-z0-9._~-]+$ ]]; then
  die "REDIS_PASSWORD に使える文字は英数字と . _ ~ - だけです (Kubernetes は \$(REDIS_PASSWORD) を URL エンコードせずに CELERY_BROKER_URL へ展開するため)。
  未設定にすると、チャートが初回インストール時にパスワードを生成して保持します。"
fi

pvc="data-${release}-postgresql-0"
pg_secret="${release}-postgresql"
app_secret="${release}-app-secrets"
redis_secret="${release}-redis"

# Reads one key of a Secret (decoded) into stdout; never printed by this script.
secret_value() {
  local encoded
  encoded=$("$kubectl_bin" get secret -n "$namespace" "$1" --ignore-not-found -o "jsonpath={.data.$2}" --request-timeout=10s 2>/dev/null) || return 1
  [ -n "$encoded" ] || return 1
  printf '%s' "$encoded" | base64 -d
}

# The guide's rule: warn when the PostgreSQL PVC is there, because it keeps its first password.
check_cluster() {
  if ! command -v "$kubectl_bin" >/dev/null 2>&1; then
    note "注意: kubectl が見つからないため、PVC ${pvc} の有無を確認できませんでした。"
    return 0
  fi
  local found
  if ! found=$("$kubectl_bin" get pvc -n "$namespace" "$pvc" --ignore-not-found -o name --request-timeout=10s 2>/dev/null); then
    note "注意: クラスタに接続できないため、PVC ${pvc} の有無を確認できませんでした。"
    return 0
  fi
  if [ -n "$found" ]; then
    warn "PVC ${pvc} (namespace ${namespace}) が既に存在します。
  PostgreSQL は初回起動時のパスワードを PVC に保持しており、POSTGRES_PASSWORD を変えても反映されません。
  パスワードが一致しない場合は認証エラー (28P01) になります。dify-guard はこの PVC がある間、
  Secret ${pg_secret} のパスワード変更を拒否します。パスワードを変える場合は (データは失われます):
    kubectl delete pvc -n ${namespace} ${pvc}"
    local current
    if current=$(secret_value "$pg_secret" postgres-password); then
      if [ "$current" != "$POSTGRES_PASSWORD" ]; then
        die "POSTGRES_PASSWORD が Secret ${pg_secret} の現在のパスワードと一致しません。
  PVC ${pvc} が残っているため、このままでは Dify が PostgreSQL に接続できず (28P01)、dify-guard も更新を拒否します。
  初回と同じ POSTGRES_PASSWORD を設定するか、データを破棄してよい場合に限り PVC を削除してください。"
      fi
    else
      note "注意: Secret ${pg_secret} を読めないため、パスワードが PVC と一致するか確認できませんでした。初回と同じ POSTGRES_PASSWORD を使ってください。"
    fi
  fi
  local current_redis
  if [ -n "${REDIS_PASSWORD:-}" ] && current_redis=$(secret_value "$redis_secret" redis-password) \
    && [ "$current_redis" != "$REDIS_PASSWORD" ]; then
    warn "REDIS_PASSWORD が現在の Redis パスワード (Secret ${redis_secret}) と異なります。
  更新後、Redis と Dify の Pod は再起動するまで古いパスワードのままです。helm の完了後に次を実行してください:
    kubectl rollout restart -n ${namespace} statefulset/${release}-redis-master \\
      deploy/${release}-api deploy/${release}-worker deploy/${release}-beat deploy/${release}-plugin-daemon"
  fi
  local current_key
  if current_key=$(secret_value "$app_secret" secret-key) && [ "$current_key" != "$DIFY_SECRET_KEY" ]; then
    warn "DIFY_SECRET_KEY が現在の SECRET_KEY (Secret ${app_secret}) と異なります。更新するとログイン中のセッションとトークンが無効になります。"
  fi
}
check_cluster

workdir=$(mktemp -d "${TMPDIR:-/tmp}/dify-deploy.XXXXXX")
trap 'rm -rf -- "$workdir"' EXIT
chmod 700 "$workdir"

cmd=("$helm_bin" upgrade --install "$release" "$chart_dir" --namespace "$namespace" --create-namespace --timeout "$timeout")
shown=("${cmd[@]}")

# Writes a secret to a private file and passes it with --set-file (masked in what is shown).
secret_arg() {
  local key=$1 value=$2 file
  file="$workdir/$key"
  if [ "$dry_run" = false ]; then (umask 077 && printf '%s' "$value" > "$file"); fi
  cmd+=(--set-file "$key=$file")
  shown+=(--set-file "$key=***")
}

secret_arg postgresql.auth.password "$POSTGRES_PASSWORD"
secret_arg secrets.difySecretKey "$DIFY_SECRET_KEY"
if [ -n "$openai_api_key" ]; then secret_arg secrets.openaiApiKey "$openai_api_key"; fi
# Redis auth is on by default: a given REDIS_PASSWORD goes through a 0600 file like the others; without
# one the chart generates a password on first install and keeps it (Secret <release>-redis).
if [ -n "${REDIS_PASSWORD:-}" ]; then secret_arg pluginDaemon.redis.password "$REDIS_PASSWORD"; fi
if [ -n "$image_tag" ]; then
  cmd+=(--set-string "image.tag=$image_tag")
  shown+=(--set-string "image.tag=$image_tag")
fi

# Passthrough --set values whose key names a secret are masked in what is shown.
for ((i = 0; i < ${#passthrough[@]}; i++)); do
  arg=${passthrough[$i]}
  cmd+=("$arg")
  if [[ "$arg" == --set* ]] && [ $((i + 1)) -lt ${#passthrough[@]} ]; then
    i=$((i + 1)); kv=${passthrough[$i]}
    cmd+=("$kv")
    if [[ "${kv%%=*}" =~ [Pp]assword|[Ss]ecret|[Kk]ey|[Tt]oken ]]; then shown+=("$arg" "${kv%%=*}=***"); else shown+=("$arg" "$kv"); fi
  else
    shown+=("$arg")
  fi
done

quote() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[-A-Za-z0-9_./:=,@+]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  printf '%s\n' "${out[*]}"
}

if [ "$dry_run" = true ]; then
  note "--dry-run: 次のコマンドを実行します (*** は秘密情報。実行時は 0600 の一時ファイルから --set-file で渡します):"
  quote "${shown[@]}"
  exit 0
fi

command -v "$helm_bin" >/dev/null 2>&1 || die "helm が見つかりません (Helm 3.x が必要です。HELM=/path/to/helm でも指定できます)"
shown_line=$(quote "${shown[@]}")
note "実行: ${shown_line}"
"${cmd[@]}"
