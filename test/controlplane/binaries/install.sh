#!/usr/bin/env bash
# Provides kube-apiserver, kubectl, etcd and helm at the versions pinned in versions.env, built with
# Go from the Go module proxy into a gitignored cache, and prints the folder that holds them on its
# last line of standard output. Rebuilds a binary only when its pinned version changes.
#
# DIFY_GUARD_TEST_ASSETS (or KUBEBUILDER_ASSETS) names a folder of existing binaries instead: they
# are checked, not built. DIFY_GUARD_BIN_CACHE moves the cache (default: <repo>/.cache/bin).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

log() { printf '[binaries] %s\n' "$*" >&2; }
die() { printf '[binaries] ERROR: %s\n' "$*" >&2; exit 1; }
names=(kube-apiserver kubectl etcd helm)

assets=${DIFY_GUARD_TEST_ASSETS:-${KUBEBUILDER_ASSETS:-}}
if [ -n "$assets" ]; then
  for n in "${names[@]}"; do
    [ -x "$assets/$n" ] || die "$assets/$n is missing or not executable (DIFY_GUARD_TEST_ASSETS=$assets)"
  done
  log "using existing binaries in $assets"
  printf '%s\n' "$assets"
  exit 0
fi

command -v go >/dev/null || die "go is not installed: Go >= 1.26 is needed to build kube-apiserver, etcd and helm"
cache=${DIFY_GUARD_BIN_CACHE:-$root/.cache/bin}
out="$cache/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
src="$cache/src"
mkdir -p "$out" "$src"
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS=-mod=mod

build_kubernetes() {
  local v=$KUBERNETES_VERSION minor staging dir=$src/kubernetes-$KUBERNETES_VERSION
  minor=${v#v1.}; minor=${minor%%.*}
  log "building kube-apiserver and kubectl $v (a cold build takes several minutes)"
  rm -rf "$dir" && mkdir -p "$dir"
  # k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the staging modules with local
  # folders. A wrapper module replaces each of them with its published v0.<minor>.<patch> instead.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$v"
  staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
  {
    echo "module dify-guard.local/kubernetes"
    echo
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    for m in $staging; do echo "replace $m => $m v0.${minor}.${v##*.}"; done
  } > "$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n' > "$dir/tools.go"
  (cd "$dir" && go mod tidy >/dev/null 2>&1 || go mod tidy)
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$dir" && go build -trimpath -ldflags "$ld" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
  (cd "$dir" && go build -trimpath -ldflags "$ld" -o "$out/kubectl" k8s.io/kubernetes/cmd/kubectl)
}

build_etcd() {
  local dir=$src/etcd-$ETCD_VERSION
  log "building etcd $ETCD_VERSION"
  rm -rf "$dir" && mkdir -p "$dir"
  printf 'module dify-guard.local/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$dir/tools.go"
  (cd "$dir" && go mod tidy >/dev/null 2>&1 || go mod tidy)
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
}

build_helm() {
  local major=${HELM_VERSION%%.*}
  log "building helm $HELM_VERSION"
  GOBIN="$out" go install -trimpath -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
}

built=0
{ [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ]; } || { build_kubernetes; built=1; }
[ -x "$out/etcd" ] || { build_etcd; built=1; }
[ -x "$out/helm" ] || { build_helm; built=1; }

for n in "${names[@]}"; do [ -x "$out/$n" ] || die "$n was not built into $out"; done
"$out/kube-apiserver" --version >/dev/null 2>&1 || die "$out/kube-apiserver does not run"
"$out/etcd" --version >/dev/null 2>&1 || die "$out/etcd does not run"
"$out/helm" version --short >/dev/null 2>&1 || die "$out/helm does not run"
if [ "$built" = 1 ]; then what=cold; else what=warm; fi
log "$what set-up: $(( $(date +%s) - start )) s (kube-apiserver $KUBERNETES_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION)"
printf '%s\n' "$out"
