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
  DIFY_SECRET_KEY     Dify の SECRET_KEY (初回のみ openssl rand -hex 32 で生成し、以後は同じ値を使うこと。
                      既存のインストールでは Secret <release>-app-secrets のキー secret-key から読み戻せます)

任意の環境変数:
  REDIS_PASSWORD      Redis のパスワード (英数字と . _ ~ - のみ)。Redis 認証は既定で有効です。
                      未設定なら初回インストール時にチャートが生成し、以後は Secret <release>-redis の値を使い続けます
  OPENAI_API_KEY      --openai-api-key の代わり (コマンドラインに鍵を残さない)
  KUBECONFIG          接続先クラスタ
  HELM, KUBECTL       helm / kubectl のパス (既定: PATH 上の helm, kubectl)
  DEPLOY_PROGRESS_INTERVAL  helm の実行中に進捗を表示する間隔 (秒。既定: 30)

オプション:
  --image-tag TAG         Dify のイメージタグ (例: 1.11.4。既定: Chart の appVersion)
  --openai-api-key KEY    OpenAI API キー (Secret <release>-app-secrets に保存)
  -n, --namespace NS      Namespace (既定: dify)
  -r, --release NAME      リリース名 (既定: dify)
  -f, --values FILE       追加の values ファイル (複数可)
      --set KEY=VALUE     helm にそのまま渡す (複数可)
      --set-string KEY=VALUE
      --set-file KEY=FILE
                          deploy.sh が管理する次のキーは指定できません (環境変数で渡してください):
                          postgresql.auth.password (POSTGRES_PASSWORD), secrets.difySecretKey (DIFY_SECRET_KEY),
                          pluginDaemon.redis.password (REDIS_PASSWORD), secrets.openaiApiKey (OPENAI_API_KEY)。
                          -f の values ファイルでも同じです
      --timeout DURATION  helm の待ち時間 (migration Job の完了待ち。既定: 20m)
      --password-matches-volume
                          PVC data-<release>-postgresql-0 が残り Secret <release>-postgresql が無いとき、
                          POSTGRES_PASSWORD が PVC の初期化時のパスワードと同じであることを運用者が明言する
                          (照合する手段がないため、このフラグなしでは実行しません)
      --dry-run           実行せず、実行する helm コマンドを表示 (秘密情報は *** で伏せる)
      --rotate-postgres-password
                          データを残したまま PostgreSQL のパスワードを変更する (ローテーション)。
                          新しいパスワードは POSTGRES_PASSWORD、現在のパスワードは Secret <release>-postgresql から読みます
                          (どちらもコマンドラインには出しません)。手順: (1) 事前確認 (2) 稼働中のデータベースで ALTER ROLE
                          (3) helm upgrade --reuse-values (postgresql.auth.rotatedInDatabase=true。dify-guard がデータベースで確認して通す)
                          (4) api, worker, beat, plugin-daemon の再起動 (5) 新しいパスワードが使え、古いパスワードが使えないことの確認。
                          途中で失敗しても同じコマンドで再実行すれば、状態を調べて続きから完了させます。
                          一緒に使えるのは -n, -r, --timeout だけです (DIFY_SECRET_KEY は不要)
  -h, --help              このヘルプ

例 (初回):
  export DIFY_SECRET_KEY=$(openssl rand -hex 32)     # 初回のみ生成し、安全な場所に保管する
  export POSTGRES_PASSWORD='your-fixed-password'
  ./deploy.sh --image-tag 1.11.4 --openai-api-key sk-xxx

例 (2 回目以降。リリース dify、namespace dify の場合):
  export DIFY_SECRET_KEY="$(kubectl get secret -n dify dify-app-secrets -o jsonpath='{.data.secret-key}' | base64 -d)"
  export POSTGRES_PASSWORD="$(kubectl get secret -n dify dify-postgresql -o jsonpath='{.data.postgres-password}' | base64 -d)"
  ./deploy.sh --image-tag 1.11.4

例 (パスワードのローテーション。データは残ります):
  read -rs -p '新しいパスワード: ' POSTGRES_PASSWORD; echo; export POSTGRES_PASSWORD
  ./deploy.sh --rotate-postgres-password
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
password_matches_volume=false
rotate=false
other_options=()
passthrough=()
values_files=()

need_value() {
  if [ "$#" -lt 2 ] || [ -z "$2" ]; then bad_usage "$1 には値が必要です"; fi
}

# The values deploy.sh itself passes from environment variables: key=variable.
managed_keys=(postgresql.auth.password=POSTGRES_PASSWORD secrets.difySecretKey=DIFY_SECRET_KEY
  pluginDaemon.redis.password=REDIS_PASSWORD secrets.openaiApiKey=OPENAI_API_KEY)

# Refuses a managed key given another way: deploy.sh's own --set-file would silently win over it.
refuse_managed() {
  local key=$1 how=$2 pair
  for pair in "${managed_keys[@]}"; do
    if [ "$key" = "${pair%%=*}" ]; then
      bad_usage "${how} で ${key} は指定できません。この値は deploy.sh が環境変数 ${pair#*=} から渡します
  (両方あると deploy.sh の値が黙って優先されるため、拒否します)。export ${pair#*=}=... を設定して再実行してください。"
    fi
  done
}

# --set a=1,b=2: every key of the comma-separated list.
check_set_keys() {
  local flag=$1 part parts
  IFS=, read -r -a parts <<< "$2"
  for part in "${parts[@]}"; do
    if [[ "$part" == *=* ]]; then refuse_managed "${part%%=*}" "$flag"; fi
  done
}

# A values file: the dotted path of every block-style key (`key:` at its indentation, quoted or not). A flow-style
# mapping ({ ... }, JSON included) naming a managed leaf cannot be placed by this reader, so it is refused as well.
values_keys() {
  awk '
    /^[[:space:]]*(#|$)/ { next }
    match($0, /^ *["\047]?[A-Za-z0-9_.-]+["\047]?:/) {
      len = RLENGTH; ind = match($0, /[^ ]/) - 1; key = substr($0, ind + 1, len - ind - 1); gsub(/["\047]/, "", key)
      while (n > 0 && indent[n] >= ind) n--
      n++; indent[n] = ind; name[n] = key; p = name[1]
      for (i = 2; i <= n; i++) p = p "." name[i]
      print p
    }' "$1"
}

check_values_file() {
  local file=$1 path
  while IFS= read -r path; do refuse_managed "$path" "values ファイル ${file}"; done < <(values_keys "$file")
  if grep -Eq '[{].*(password|difySecretKey|openaiApiKey)["'"'"']?[[:space:]]*:' "$file"; then
    bad_usage "values ファイル ${file} の { } 形式の値に password / difySecretKey / openaiApiKey があります。
  deploy.sh が管理するキー (${managed_keys[*]}) は、右側の環境変数で渡してください。"
  fi
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --rotate-postgres-password) rotate=true; shift ;;
    --image-tag) other_options+=("${1%%=*}"); need_value "$@"; image_tag=$2; shift 2 ;;
    --image-tag=*) other_options+=("${1%%=*}"); image_tag=${1#*=}; shift ;;
    --openai-api-key) other_options+=("${1%%=*}"); need_value "$@"; openai_api_key=$2; shift 2 ;;
    --openai-api-key=*) other_options+=("${1%%=*}"); openai_api_key=${1#*=}; shift ;;
    -n|--namespace) need_value "$@"; namespace=$2; shift 2 ;;
    --namespace=*) namespace=${1#*=}; shift ;;
    -r|--release) need_value "$@"; release=$2; shift 2 ;;
    --release=*) release=${1#*=}; shift ;;
    -f|--values) other_options+=("${1%%=*}"); need_value "$@"; values_files+=("$2"); shift 2 ;;
    --values=*) other_options+=("${1%%=*}"); values_files+=("${1#*=}"); shift ;;
    --set|--set-string|--set-file)
      need_value "$@"; [[ "$2" == *=* ]] || bad_usage "$1 は KEY=VALUE の形で指定してください"
      check_set_keys "$1" "$2"; other_options+=("$1"); passthrough+=("$1" "$2"); shift 2 ;;
    --timeout) need_value "$@"; timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --password-matches-volume) other_options+=("${1%%=*}"); password_matches_volume=true; shift ;;
    --dry-run) other_options+=("${1%%=*}"); dry_run=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) bad_usage "不明な引数: $1" ;;
  esac
done

if [ "$rotate" = true ] && [ "${#other_options[@]}" -gt 0 ]; then
  bad_usage "--rotate-postgres-password と ${other_options[0]} は一緒に使えません (ローテーションで使えるのは -n, -r, --timeout だけです。
  ほかの値は現在のリリースのまま引き継ぎます)。"
fi

for file in "${values_files[@]}"; do
  [ -r "$file" ] || bad_usage "values ファイル $file を読めません"
  check_values_file "$file"
  passthrough+=(--values "$file")
done

[[ "$namespace" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || bad_usage "namespace '$namespace' は Kubernetes の名前として不正です"
[[ "$release" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || bad_usage "リリース名 '$release' は Kubernetes の名前として不正です"
[[ "$timeout" =~ ^[0-9]+(s|m|h)$ ]] || bad_usage "--timeout は 300s, 20m, 1h のように指定してください"
interval=${DEPLOY_PROGRESS_INTERVAL:-30}
[[ "$interval" =~ ^[1-9][0-9]*$ ]] || bad_usage "DEPLOY_PROGRESS_INTERVAL は秒数 (1 以上の整数) で指定してください"

[ -n "${POSTGRES_PASSWORD:-}" ] || die "POSTGRES_PASSWORD が設定されていません。PostgreSQL のパスワードは固定です (ランダム生成はしません)。
  export POSTGRES_PASSWORD='your-fixed-password'
を設定してから再実行してください。既存の PVC data-${release}-postgresql-0 がある場合は、初回と同じパスワードが必要です。"

if [ -n "${REDIS_PASSWORD:-}" ] && ! [[ "$REDIS_PASSWORD" =~ ^[A-Za-z0-9._~-]+$ ]]; then
  die "REDIS_PASSWORD に使える文字は英数字と . _ ~ - だけです (Kubernetes は \$(REDIS_PASSWORD) を URL エンコードせずに CELERY_BROKER_URL へ展開するため)。
  未設定にすると、チャートが初回インストール時にパスワードを生成して保持します。"
fi

pvc="data-${release}-postgresql-0"
pg_secret="${release}-postgresql"
app_secret="${release}-app-secrets"
redis_secret="${release}-redis"
job="${release}-db-migration"

kube() { "$kubectl_bin" "$@" --request-timeout=10s; }

# Reads one key of a Secret (decoded) into stdout; never printed by this script.
secret_value() {
  local encoded
  encoded=$(kube get secret -n "$namespace" "$1" --ignore-not-found -o "jsonpath={.data.$2}" 2>/dev/null) || return 1
  [ -n "$encoded" ] || return 1
  printf '%s' "$encoded" | base64 -d
}

# present / absent / unknown (no kubectl, no cluster, or not allowed to read it).
object_state() {
  local out
  command -v "$kubectl_bin" >/dev/null 2>&1 || { echo unknown; return; }
  out=$(kube get "$1" -n "$namespace" "$2" --ignore-not-found -o name 2>/dev/null) || { echo unknown; return; }
  if [ -n "$out" ]; then echo present; else echo absent; fi
}

# The command that reads a Secret's key back (printed for the operator; run by them, not here).
read_back() {
  printf "kubectl get secret -n %s %s -o jsonpath='{.data.%s}' | base64 -d" "$namespace" "$1" "$2"
}

# The whole way out when the PVC keeps a password: keep it, or lose the data, every command in order.
ways_out() {
  cat <<EOF
  対処法は 3 つです:
  (1) データを残す (通常はこちら): 初期化時のパスワードを使い続けます。Secret ${pg_secret} が残っていれば、それを読み戻します:
        export POSTGRES_PASSWORD="\$($(read_back "$pg_secret" postgres-password))"
        ./deploy.sh ... (同じオプションで再実行)
  (2) データを残したままパスワードを変える (Secret ${pg_secret} があり、PostgreSQL が動いているとき):
        export POSTGRES_PASSWORD='new-password'
        ./deploy.sh --rotate-postgres-password -n ${namespace} -r ${release}
  (3) パスワードを変えてデータを捨てる (データはすべて失われます): PostgreSQL を止め、PVC を削除してから新しいパスワードで導入します:
        kubectl scale statefulset -n ${namespace} ${release}-postgresql --replicas=0
        kubectl delete pvc -n ${namespace} ${pvc}
        kubectl wait --for=delete pvc/${pvc} -n ${namespace} --timeout=5m
        export POSTGRES_PASSWORD='new-password'
        ./deploy.sh ... (同じオプションで再実行。StatefulSet は元の replicas に戻り、新しい PVC が作られます)
EOF
}

# The PVC keeps the password it was initialised with: compare with the Secret without printing either.
check_postgresql() {
  local secret current
  secret=$(object_state secret "$pg_secret")
  if [ "$secret" = absent ]; then
    [ "$password_matches_volume" = true ] || die "PVC ${pvc} (namespace ${namespace}) があるのに、そのパスワードを記録した Secret ${pg_secret} がありません。
  PostgreSQL は PVC の初期化時のパスワードを使い続けますが、それと POSTGRES_PASSWORD が同じかどうかを確かめる手段がありません
  (違えば Dify のすべてのコンポーネントが 28P01 で接続できなくなります)。
  POSTGRES_PASSWORD が PVC の初期化時のパスワードと同じだと分かっている場合に限り、--password-matches-volume を付けて再実行してください。
  分からない場合は、データを残すならパスワードを探してください。データを捨ててよい場合は次の (3) の手順です。
$(ways_out)"
    note "注意: --password-matches-volume の指定により、POSTGRES_PASSWORD を PVC ${pvc} の初期化時のパスワードとして Secret ${pg_secret} を作り直します (照合はできません)。"
    return 0
  fi
  if [ "$secret" = present ] && current=$(secret_value "$pg_secret" postgres-password); then
    [ "$current" = "$POSTGRES_PASSWORD" ] && return 0
    die "POSTGRES_PASSWORD が Secret ${pg_secret} の現在のパスワードと一致しません。
  PVC ${pvc} が残っているため、このままでは Dify が PostgreSQL に接続できず (28P01)、dify-guard も更新を拒否します。
$(ways_out)"
  fi
  warn "PVC ${pvc} (namespace ${namespace}) が既に存在しますが、Secret ${pg_secret} を読めないため、
  POSTGRES_PASSWORD が PVC の初期化時のパスワードと一致するか確認できませんでした。一致しないと 28P01 になります。
$(ways_out)"
}

# SECRET_KEY: on an existing install it must be read back (a new one ends every session); generate only the first time.
check_secret_key() {
  local state current
  state=$(object_state secret "$app_secret")
  if [ -z "${DIFY_SECRET_KEY:-}" ]; then
    local read_it first="  export DIFY_SECRET_KEY=\$(openssl rand -hex 32)"
    read_it="  export DIFY_SECRET_KEY=\"\$($(read_back "$app_secret" secret-key))\""
    if [ "$state" = present ]; then
      die "DIFY_SECRET_KEY が設定されていません。既存のインストールです (Secret ${app_secret} があります)。
新しく生成せず、現在の値を読み戻して使ってください (変えるとログイン中のセッションとトークンが無効になります):
${read_it}"
    elif [ "$state" = absent ]; then
      die "DIFY_SECRET_KEY が設定されていません (Dify の SECRET_KEY)。初回インストールなので、次で生成し、安全な場所に保管して以後も同じ値を使ってください:
${first}"
    else
      die "DIFY_SECRET_KEY が設定されていません (Dify の SECRET_KEY)。クラスタを確認できないため、既存のインストールかどうか分かりません。
  既存のインストールなら、新しく生成せず現在の値を読み戻してください:
${read_it}
  初回インストールの場合に限り、生成して保管してください:
${first}"
    fi
  fi
  if [ "$state" = present ] && current=$(secret_value "$app_secret" secret-key) && [ "$current" != "$DIFY_SECRET_KEY" ]; then
    warn "DIFY_SECRET_KEY が現在の SECRET_KEY (Secret ${app_secret}) と異なります。更新するとログイン中のセッションとトークンが無効になります。
  現在の値を使う場合:
  export DIFY_SECRET_KEY=\"\$($(read_back "$app_secret" secret-key))\""
  fi
}

check_redis() {
  local current
  if [ -n "${REDIS_PASSWORD:-}" ] && current=$(secret_value "$redis_secret" redis-password) && [ "$current" != "$REDIS_PASSWORD" ]; then
    warn "REDIS_PASSWORD が現在の Redis パスワード (Secret ${redis_secret}) と異なります。
  更新後、Redis と Dify の Pod は再起動するまで古いパスワードのままです。helm の完了後に次を実行してください:
    kubectl rollout restart -n ${namespace} statefulset/${release}-redis-master \\
      deploy/${release}-api deploy/${release}-worker deploy/${release}-beat deploy/${release}-plugin-daemon"
  fi
}

check_cluster() {
  if ! command -v "$kubectl_bin" >/dev/null 2>&1; then
    note "注意: kubectl が見つからないため、PVC ${pvc} の有無を確認できませんでした。"
  else
    local state
    state=$(object_state pvc "$pvc")
    if [ "$state" = present ]; then
      check_postgresql
    elif [ "$state" = unknown ]; then
      note "注意: クラスタに接続できないため、PVC ${pvc} の有無を確認できませんでした。"
    fi
  fi
  check_secret_key
  check_redis
}

# ---- --rotate-postgres-password: change the password in the running database, then the release, keeping the data ----
pg_pod="${release}-postgresql-0"
restarted=(api worker beat plugin-daemon)
step() { note ""; note "== $* =="; }

# kubectl exec into PostgreSQL, stdin passed through (secrets go there, never into argv).
pg_exec() { "$kubectl_bin" exec -i -n "$namespace" "$pg_pod" -c postgresql --request-timeout=30s -- "$@"; }

# A TCP login as the Secret's user with the password on stdin (read into PGPASSWORD inside the pod):
# 0 accepted, 1 refused (28P01), 2 something else (pod, network, ...).
pg_login() {
  local out
  # shellcheck disable=SC2016 # expanded by the pod's sh, not here
  if out=$(printf '%s\n' "$1" | pg_exec sh -c 'IFS= read -r PGPASSWORD; export PGPASSWORD
    exec psql -h 127.0.0.1 -U "$1" -d "$2" -w -X -Atc "SELECT 1"' sh "$pg_user" "$pg_db" 2>&1); then
    return 0
  fi
  if [[ "$out" == *"password authentication failed"* ]]; then return 1; fi
  return 2
}

# ALTER ROLE over the pod's local socket (trusted inside the image); the SQL on psql's stdin, its output never shown.
pg_set_password() {
  local out quoted=${1//\'/\'\'}
  out=$(printf '%s\n' '\set ON_ERROR_STOP 0' "SET log_statement = 'none';" "SET log_min_error_statement = 'panic';" \
    '\set ON_ERROR_STOP 1' "ALTER ROLE \"${pg_user}\" PASSWORD '${quoted}';" '\q' \
    | pg_exec psql -U "$pg_user" -d "$pg_db" -X -q 2>&1) && return 0
  # psql may echo the statement after an error: only its first line is shown, any password in it masked.
  out=${out%%$'\n'*}
  note "  psql: ${out//"$1"/***}"
  return 1
}

rotation_refuse() {
  die "$1
  パスワードは変更していません (データベースも Secret ${pg_secret} も元のままです)。"
}

# (a) what must hold before anything changes; sets old_password, pg_user, pg_db.
rotation_checks() {
  step "1/5 事前確認 (PVC, Secret, PostgreSQL の Pod, 新しいパスワード)"
  command -v "$helm_bin" >/dev/null 2>&1 || rotation_refuse "helm が見つかりません (HELM=/path/to/helm でも指定できます)。"
  command -v "$kubectl_bin" >/dev/null 2>&1 || rotation_refuse "kubectl が見つかりません (KUBECTL=/path/to/kubectl でも指定できます)。"
  case $(object_state pvc "$pvc") in
    present) ;;
    absent) rotation_refuse "PVC ${pvc} (namespace ${namespace}) がありません。データが無いのでローテーションは不要です。
  新しい POSTGRES_PASSWORD で ./deploy.sh を通常どおり実行してください。" ;;
    *) rotation_refuse "クラスタに接続できないため、PVC ${pvc} を確認できません。KUBECONFIG と接続を確認してください。" ;;
  esac
  old_password=$(secret_value "$pg_secret" "postgres-password") || rotation_refuse "Secret ${pg_secret} から現在のパスワードを読めません。
  Secret があり、読む権限があることを確認してください: kubectl get secret -n ${namespace} ${pg_secret}"
  pg_user=$(secret_value "$pg_secret" "postgres-username") || pg_user=dify
  pg_db=$(secret_value "$pg_secret" "postgres-database") || pg_db=dify
  [[ "$pg_user" =~ ^[a-z_][a-z0-9_]*$ && "$pg_db" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] \
    || rotation_refuse "Secret ${pg_secret} のユーザー名またはデータベース名が想定外の形式です。"
  local ready
  ready=$(kube get pod -n "$namespace" "$pg_pod" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) || ready=
  [ "$ready" = True ] || rotation_refuse "PostgreSQL の Pod ${pg_pod} が Ready ではありません。データベースが動いている間に実行してください:
  kubectl get pod -n ${namespace} ${pg_pod}"
  if [[ "$POSTGRES_PASSWORD" =~ [[:space:]\'\"\\] ]]; then
    rotation_refuse "新しい POSTGRES_PASSWORD に空白・引用符・バックスラッシュは使えません (plugin daemon が引用なしの接続文字列を組み立てるため。チャートと同じ規則です)。"
  fi
  note "  PVC ${pvc}: あり / Secret ${pg_secret}: 読めます / Pod ${pg_pod}: Ready / 新しいパスワード: 使える文字だけです"
}

# Which of the two passwords the database accepts now: old, new, or none (sets db_state).
detect_database() {
  local rc=0
  pg_login "$old_password" || rc=$?
  if [ "$rc" -eq 0 ]; then db_state=old; return; fi
  [ "$rc" -eq 1 ] || die "PostgreSQL (${pg_pod}) にログインを試せませんでした (28P01 以外の失敗)。Pod とデータベースの状態を確認してください:
  kubectl get pod -n ${namespace} ${pg_pod}; kubectl logs -n ${namespace} ${pg_pod}"
  rc=0; pg_login "$POSTGRES_PASSWORD" || rc=$?
  if [ "$rc" -eq 0 ]; then db_state=new; else db_state=none; fi
}

# (b) the role's password in the running database.
rotate_database() {
  step "2/5 稼働中のデータベースでパスワードを変更 (ALTER ROLE。Pod 内のローカル接続)"
  pg_set_password "$POSTGRES_PASSWORD" || die "データベースのパスワードを変更できませんでした。古いパスワードのまま使えます (何も変わっていません)。"
  note "  データベースは新しいパスワードを受け付けます。この時点から古いパスワードでの新しい接続は 28P01 になるので、続けて Secret を更新します。"
}

# (c) the release, with the new password from a 0600 values file; dify-guard checks it against the database.
rotate_release() {
  step "3/5 リリースを更新 (helm upgrade --reuse-values、postgresql.auth.rotatedInDatabase=true。dify-guard がデータベースで確認します)"
  workdir=$(mktemp -d "${TMPDIR:-/tmp}/dify-rotate.XXXXXX")
  trap 'rm -rf -- "$workdir"' EXIT
  local values="$workdir/password.yaml"
  (umask 077 && printf 'postgresql:\n  auth:\n    password: "%s"\n    rotatedInDatabase: true\n' "$POSTGRES_PASSWORD" > "$values")
  local rc=0
  note "実行: ${helm_bin} upgrade ${release} ${chart_dir} --namespace ${namespace} --reuse-values \\
    --values <0600 の一時ファイル> --timeout ${timeout}"
  "$helm_bin" upgrade "$release" "$chart_dir" --namespace "$namespace" --reuse-values --values "$values" --timeout "$timeout" || rc=$?
  rm -f -- "$values"
  [ "$rc" -eq 0 ] && return 0
  release_failed "$rc"
}

# helm failed: if the Secret still holds the old password, the database goes back to it (Dify keeps working).
release_failed() {
  local stored
  stored=$(secret_value "$pg_secret" "postgres-password") || stored=
  if [ "$stored" = "$POSTGRES_PASSWORD" ]; then
    warn "helm は失敗しました (終了コード $1) が、Secret ${pg_secret} は新しいパスワードに更新済みです。続けて再起動します。"
    return 0
  fi
  if pg_set_password "$old_password"; then
    die "helm が失敗しました (終了コード $1)。データベースのパスワードを元に戻しました: 古いパスワードのまま使えます。
  原因 (上の helm のメッセージ) を取り除いてから、同じコマンドで再実行してください。"
  fi
  die "helm が失敗し (終了コード $1)、データベースのパスワードも元に戻せませんでした。データベースは新しいパスワード、Secret は古いパスワードです
  (Dify の新しい接続は 28P01 になります)。同じコマンド (同じ POSTGRES_PASSWORD) で再実行すると、続きから完了させます。"
}

# (d) what reads DB_PASSWORD at start.
restart_components() {
  step "4/5 パスワードを読むコンポーネントを再起動 (${restarted[*]})"
  local names=() c
  for c in "${restarted[@]}"; do names+=("deploy/${release}-${c}"); done
  kube rollout restart -n "$namespace" "${names[@]}" >&2 || die "再起動を指示できませんでした。Secret とデータベースは新しいパスワードです。
  同じコマンドで再実行するか、次を実行してください: kubectl rollout restart -n ${namespace} ${names[*]}"
  for c in "${names[@]}"; do
    "$kubectl_bin" rollout status -n "$namespace" "$c" --timeout="$timeout" >&2 || die "${c} の再起動が完了しませんでした。
  Secret とデータベースは新しいパスワードです。kubectl describe -n ${namespace} ${c} で原因を確認し、同じコマンドで再実行してください。"
  done
}

# (e) the new password logs in over TCP, the old one is refused (28P01).
verify_rotation() {
  step "5/5 確認 (TCP で新しいパスワードと古いパスワードでログイン)"
  pg_login "$POSTGRES_PASSWORD" || die "新しいパスワードでログインできません。kubectl logs -n ${namespace} ${pg_pod} を確認してください。"
  note "  新しいパスワード: ログインできます"
  if [ -z "${old_password:-}" ]; then
    note "  古いパスワード: 前回の実行で変更済みのため、ここでは分かりません (確認を省きます)"
  elif pg_login "$old_password"; then
    die "古いパスワードでもログインできます。ローテーションは完了していません。同じコマンドで再実行してください。"
  else
    note "  古いパスワード: 拒否されます (28P01)"
  fi
  note ""
  note "完了: PostgreSQL のパスワードを変更しました (データはそのままです)。以後 ./deploy.sh では POSTGRES_PASSWORD に新しいパスワードを指定してください。"
}

rotate_postgres_password() {
  rotation_checks
  local db_state
  if [ "$old_password" = "$POSTGRES_PASSWORD" ]; then
    note "  POSTGRES_PASSWORD は Secret ${pg_secret} のパスワードと同じです: 前回の実行で Secret まで更新済みとみなし、再起動と確認を行います。"
    old_password=
    pg_login "$POSTGRES_PASSWORD" || die "Secret ${pg_secret} は POSTGRES_PASSWORD と同じですが、データベースが受け付けません。
  別のパスワードを指定したか、データベースが変更されています。データベースが受け付けるパスワードを確かめてください。"
  else
    detect_database
    case $db_state in
      old) rotate_database ;;
      new) note "  データベースは既に新しいパスワードです (前回の実行で変更済み)。Secret の更新から続けます。" ;;
      none) die "データベースは Secret ${pg_secret} のパスワードも POSTGRES_PASSWORD も受け付けません (28P01)。
  前回と別のパスワードを指定していないか確認してください。何も変更していません。" ;;
    esac
    rotate_release
  fi
  restart_components
  verify_rotation
}

if [ "$rotate" = true ]; then
  rotate_postgres_password
  exit 0
fi
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

# One progress line set: the migration hook Job, its pod, and this release's Deployments not yet ready.
progress() {
  local job_line pods deploys
  job_line=$(kube get job -n "$namespace" "$job" --ignore-not-found \
    -o 'jsonpath=active={.status.active} succeeded={.status.succeeded} failed={.status.failed}' 2>/dev/null) || job_line='(取得できません)'
  pods=$(kube get pods -n "$namespace" -l "job-name=${job}" \
    -o 'jsonpath={range .items[*]}{.metadata.name}={.status.phase} {end}' 2>/dev/null) || pods=
  pods=${pods% }
  deploys=$(kube get deploy -n "$namespace" -l "app.kubernetes.io/instance=${release}" \
    -o 'jsonpath={range .items[*]}{.metadata.name} {.status.readyReplicas}/{.spec.replicas}{"\n"}{end}' 2>/dev/null \
    | awk '{ split($2, r, "/"); if (r[1] + 0 < r[2] + 0) printf "%s%s(%d/%d)", sep, $1, r[1], r[2]; sep = " " }') || deploys=
  local now elapsed=$((SECONDS - started))
  now=$(date +%H:%M:%S)
  if [ -n "$job_line" ]; then
    job_line="$(printf '%s' "$job_line" | sed -E 's/=( |$)/=0\1/g') Pod: ${pods:-なし}"
  fi
  note "[${now}] 待機中 (${elapsed} 秒経過 / 最大 ${timeout}): Job ${job}: ${job_line:-まだ作成されていません}"
  note "  準備ができていない Deployment: ${deploys:-なし}"
}

# What to type next when helm fails (the guide's commands for this release).
after_failure() {
  note "エラー: helm が失敗しました (終了コード $1)。次のコマンドで原因を確認してください:
  kubectl get jobs,pods -n ${namespace}
  kubectl logs -n ${namespace} job/${job}
  kubectl logs -n ${namespace} job/${job} -c wait-for-postgresql
  kubectl describe job -n ${namespace} ${job}
  kubectl describe pods -n ${namespace} -l job-name=${job}
  kubectl get events -n ${namespace} --sort-by=.lastTimestamp
  Job を再実行する場合は、原因を取り除いてから ./deploy.sh を同じオプションで再実行してください (古い Job は削除されて作り直されます)。"
}

# helm in the background, a progress report every $interval seconds until it returns.
run_helm() {
  note "helm は post-install / post-upgrade hook の migration Job ${job} の完了を最大 ${timeout} 待ちます (--timeout ${timeout})。
  Deployment のロールアウト (api, worker, web など) は helm の完了を待たずに進みます。${interval} 秒ごとに進捗を表示します。
  確認: kubectl get jobs,pods -n ${namespace} / kubectl rollout status deploy/${release}-api -n ${namespace}"
  started=$SECONDS
  "${cmd[@]}" &
  helm_pid=$!
  trap 'kill "$helm_pid" 2>/dev/null; exit 130' INT TERM
  local next=$((SECONDS + interval)) rc=0
  while kill -0 "$helm_pid" 2>/dev/null; do
    sleep 1
    if [ "$SECONDS" -ge "$next" ] && kill -0 "$helm_pid" 2>/dev/null; then
      progress
      next=$((SECONDS + interval))
    fi
  done
  wait "$helm_pid" || rc=$?
  if [ "$rc" -ne 0 ]; then after_failure "$rc"; exit "$rc"; fi
  local elapsed=$((SECONDS - started))
  note "helm が完了しました (${elapsed} 秒)。"
}
run_helm
