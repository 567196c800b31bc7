#!/usr/bin/env bash
# Runs the dify-guard image as the chart does (user 65532, read-only root filesystem with no tmpfs,
# all capabilities dropped, TLS files mounted at /etc/dify-guard/tls) but with no cluster: KUBECONFIG
# names an API server that refuses connections. Expects: the process starts, /healthz answers 200,
# /readyz 503 (the PVC cache cannot sync), TLS 1.2 and 1.3 handshakes on 8443 verify against the CA,
# an AdmissionReview is answered and a password change refused ("cannot verify") with no password echoed,
# nothing can be written, no npm, the version label matches package.json, SIGTERM stops it.
# The container is stopped and removed by its id whatever happens.
#
# Usage: scripts/image/smoke.sh [IMAGE]   (default: the image build.sh makes)
# Ends with the line "smoke: N passed, N failed"; exits non-zero if any check failed.
set -euo pipefail
# shellcheck source=scripts/image/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_podman
ensure_commands curl=curl openssl=openssl node=nodejs
image=${1:-$(image_ref)}
podman image exists "$image" || die "no image $image: run scripts/image/build.sh first"

work=$(mktemp -d /tmp/dify-guard-smoke.XXXXXX)
id=''
cleanup() {
  if [ -n "$id" ]; then podman rm --force --time 0 "$id" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

passed=0 failed=0
check() { # check NAME COMMAND...: runs the command, counts and prints the outcome
  local name=$1; shift
  if "$@" > "$work/check.out" 2>&1; then
    passed=$((passed + 1)); printf 'ok     %s: %s\n' "$name" "$(tail -n 1 "$work/check.out")"
  else
    failed=$((failed + 1)); printf 'FAILED %s\n' "$name"; sed 's/^/       | /' "$work/check.out" | tail -n 15
  fi
}

# Serving certificate for localhost; the key is handed to 65532 as a Secret volume with fsGroup would be.
bash "$repo_root/certs/generate.sh" --out "$work/certs" >/dev/null
mkdir -p "$work/tls" "$work/kube"
cp "$work/certs/tls.crt" "$work/certs/tls.key" "$work/tls/"
chown -R 65532:65532 "$work/tls" 2>/dev/null || chmod 0644 "$work/tls/tls.key"
chmod 0755 "$work/tls"
# An API server that is not there: port 9 on the container's own loopback refuses at once.
cat > "$work/kube/config" <<'EOF'
apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}
users:
- name: nobody
  user: {token: not-a-real-token}
contexts:
- name: nowhere
  context: {cluster: nowhere, user: nobody}
current-context: nowhere
EOF
chmod -R a+rX "$work/kube"

id=$(podman run --detach \
  --read-only --read-only-tmpfs=false \
  --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
  --publish 127.0.0.1::8443 --publish 127.0.0.1::8080 \
  --volume "$work/tls:/etc/dify-guard/tls:ro" \
  --volume "$work/kube:/etc/dify-guard/kube:ro" \
  --env DIFY_GUARD_TLS_CERT_FILE=/etc/dify-guard/tls/tls.crt \
  --env DIFY_GUARD_TLS_KEY_FILE=/etc/dify-guard/tls/tls.key \
  --env KUBECONFIG=/etc/dify-guard/kube/config \
  "$image")
log "started container ${id:0:12} from $image"
host_port() { podman port "$id" "$1/tcp" | sed -n '1s/.*://p'; }
https_port=$(host_port 8443)
health_port=$(host_port 8080)

running() { [ "$(podman inspect --format '{{.State.Running}}' "$id")" = true ]; }
up=0
for _ in $(seq 1 60); do
  running || break
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$health_port/healthz"; then up=1; break; fi
  sleep 0.5
done
if [ "$up" = 0 ]; then
  printf 'FAILED the process did not start serving (running=%s); its output:\n' "$(running && echo yes || echo no)"
  podman logs "$id" 2>&1 | tail -n 40 | sed 's/^/       | /'
  echo "smoke: $passed passed, $((failed + 1)) failed"
  exit 1
fi

status_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$health_port$1"; }
expect_status() { local got; got=$(status_of "$1"); echo "GET $1 -> $got (want $2)"; [ "$got" = "$2" ]; }
handshake() { # handshake 1.2|1.3: that protocol, verified against the generated CA for the name localhost
  local out; out=$(openssl s_client -brief -connect "127.0.0.1:$https_port" -servername localhost \
    -verify_hostname localhost -CAfile "$work/certs/ca.crt" -verify_return_error "-tls${1/./_}" </dev/null 2>&1)
  echo "$out" | grep -E '^(Protocol version|Ciphersuite|Verification|.*error)'
  echo "$out" | grep -qx "Protocol version: TLSv$1" && echo "$out" | grep -qx 'Verification: OK'
}
runs_as_nonroot() { local ids; ids=$(podman exec "$id" node -p 'process.getuid() + ":" + process.getgid()'); echo "$ids"; [ "$ids" = 65532:65532 ]; }
cannot_write() { # every place a process might write to: the app, /tmp, HOME-less defaults
  podman exec "$id" node -e '
    const fs = require("fs"); let wrote = [];
    for (const dir of ["/app", "/app/dist", "/tmp", "/var/tmp", "/"]) {
      try { fs.writeFileSync(dir + "/.probe", "x"); wrote.push(dir); } catch (e) { console.log(dir, e.code); }
    }
    if (wrote.length) { console.log("wrote to", wrote); process.exit(1); }'
}
no_npm() { ! podman exec "$id" sh -c 'command -v npm || command -v npx || ls /usr/local/lib/node_modules/npm'; }
version_label() {
  local label want; want=$(package_version)
  label=$(podman image inspect --format '{{index .Labels "org.opencontainers.image.version"}}' "$image")
  echo "label $label, package.json $want"; [ "$label" = "$want" ]
}
no_key_in_logs() { ! podman logs "$id" 2>&1 | grep -n 'PRIVATE KEY'; }

check "GET /healthz answers 200" expect_status /healthz 200
check "GET /readyz answers 503 with no cluster" expect_status /readyz 503
check "TLS 1.2 handshake on 8443 verifies" handshake 1.2
check "TLS 1.3 handshake on 8443 verifies" handshake 1.3
review() { node "$image_dir/smoke-review.mjs" "$1" "$https_port" "$work/certs/ca.crt"; }
check "an unguarded Secret UPDATE is allowed over HTTPS" review unrelated
check "a password change is refused while the PVC cache cannot sync" review unsynced
check "runs as 65532:65532" runs_as_nonroot
check "nothing writable (read-only root, no tmpfs)" cannot_write
check "no npm or npx in the image" no_npm
check "image version label equals package.json version" version_label
check "no private key in the logs" no_key_in_logs

# Last: SIGTERM must end node as PID 1 well before podman falls back to SIGKILL (exit 137).
stop_timeout=20
stopped_by_sigterm() {
  local t0=$SECONDS code
  podman stop --time "$stop_timeout" "$id" >/dev/null
  code=$(podman inspect --format '{{.State.ExitCode}}' "$id")
  echo "exited $code after $((SECONDS - t0)) s (SIGKILL at ${stop_timeout} s would give 137)"
  [ "$code" != 137 ] && [ $((SECONDS - t0)) -lt "$stop_timeout" ]
}
check "SIGTERM stops it (no --init needed)" stopped_by_sigterm
podman logs "$id" > "$work/container.log" 2>&1 || true
log "container output: $(wc -l < "$work/container.log") lines; last lines:"
tail -n 8 "$work/container.log" | sed 's/^/       | /' >&2

echo "smoke: $passed passed, $failed failed"
[ "$failed" = 0 ]
