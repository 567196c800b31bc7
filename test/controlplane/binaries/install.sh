#!/usr/bin/env bash
# Provides kube-apiserver, kubectl, etcd, helm and promtool at the versions pinned in versions.env, built
# with Go from the Go module proxy into a gitignored cache, and prints the folder that holds them on its
# last line of standard output. Each component (kubernetes, etcd, helm, prometheus) is cached under its own
# version and rebuilt only when that pin changes; concurrent runs wait for one another (flock).
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
names=(kube-apiserver kubectl etcd helm promtool)

assets=${DIFY_GUARD_TEST_ASSETS:-${KUBEBUILDER_ASSETS:-}}
if [ -n "$assets" ]; then
  for n in "${names[@]}"; do
    [ -x "$assets/$n" ] || die "$assets/$n is missing or not executable (DIFY_GUARD_TEST_ASSETS=$assets)"
  done
  log "using existing binaries in $assets"
  printf '%s\n' "$assets"
  exit 0
fi

cache=${DIFY_GUARD_BIN_CACHE:-$root/.cache/bin}
mkdir -p "$cache"
# One build at a time (parallel test files, a demo and CI may all ask at once); the others wait here.
exec 9>"$cache/.lock"
flock 9

# Each component is cached under its own version, so changing one pin rebuilds only that one; the
# folder handed out links them together.
k8s_dir=$cache/kubernetes-$KUBERNETES_VERSION
etcd_dir=$cache/etcd-$ETCD_VERSION
# "-k8s": built with the Kubernetes version stamp (an older cache without it is not reused).
helm_dir=$cache/helm-$HELM_VERSION-k8s
prom_dir=$cache/prometheus-$PROMETHEUS_VERSION
out="$cache/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-prometheus-$PROMETHEUS_VERSION"
src="$cache/src"
mkdir -p "$out" "$src" "$k8s_dir" "$etcd_dir" "$helm_dir" "$prom_dir"
start=$(date +%s)

# Binaries built by the first version of this script sit directly in $out: adopt them.
for pair in "kube-apiserver:$k8s_dir" "kubectl:$k8s_dir" "etcd:$etcd_dir" "helm:$helm_dir"; do
  n=${pair%%:*} d=${pair#*:}
  if [ -f "$out/$n" ] && [ ! -L "$out/$n" ] && [ ! -e "$d/$n" ]; then mv "$out/$n" "$d/$n"; fi
done

need_go() {
  command -v go >/dev/null || die "go is not installed: Go >= 1.26 is needed to build kube-apiserver, etcd, helm and promtool (or set DIFY_GUARD_TEST_ASSETS to a folder with them)"
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
}

# go build writes to a temporary name first, so an interrupted build never leaves a cached half binary.
# Usage: build_to TARGET PACKAGE GO-BUILD-FLAGS...
build_to() {
  local target=$1 package=$2; shift 2
  rm -f "$target.tmp"
  go build "$@" -o "$target.tmp" "$package" && mv "$target.tmp" "$target"
}

build_kubernetes() {
  need_go
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
  (cd "$dir" && { go mod tidy >/dev/null 2>&1 || go mod tidy; })
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$dir" && build_to "$k8s_dir/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver -trimpath -ldflags "$ld")
  (cd "$dir" && build_to "$k8s_dir/kubectl" k8s.io/kubernetes/cmd/kubectl -trimpath -ldflags "$ld")
}

build_etcd() {
  need_go
  local dir=$src/etcd-$ETCD_VERSION
  log "building etcd $ETCD_VERSION"
  rm -rf "$dir" && mkdir -p "$dir"
  printf 'module dify-guard.local/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$dir/tools.go"
  (cd "$dir" && { go mod tidy >/dev/null 2>&1 || go mod tidy; })
  (cd "$dir" && build_to "$etcd_dir/etcd" go.etcd.io/etcd/server/v3 -trimpath -ldflags "-s -w")
}

build_helm() {
  need_go
  local major=${HELM_VERSION%%.*} tmp
  log "building helm $HELM_VERSION"
  tmp=$(mktemp -d "$helm_dir/.build.XXXXXX")
  # As helm's Makefile does, stamp the Kubernetes version of its client-go: otherwise `helm template`
  # and `helm lint` assume Kubernetes v1.20 and a chart cannot declare a realistic kubeVersion.
  local gomod kminor pkg=helm.sh/helm/$major
  gomod=$(go mod download -json "$pkg@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  kminor=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" | head -1)
  [ -n "$kminor" ] || die "could not read the k8s.io/client-go version of helm $HELM_VERSION"
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w -X $pkg/internal/version.version=$HELM_VERSION \
    -X $pkg/pkg/lint/rules.k8sVersionMajor=1 -X $pkg/pkg/lint/rules.k8sVersionMinor=$kminor \
    -X $pkg/pkg/chartutil.k8sVersionMajor=1 -X $pkg/pkg/chartutil.k8sVersionMinor=$kminor" \
    "$pkg/cmd/helm@$HELM_VERSION"
  mv "$tmp/helm" "$helm_dir/helm" && rmdir "$tmp"
}

build_promtool() {
  need_go
  local tmp release pkg=github.com/prometheus/prometheus
  log "building promtool $PROMETHEUS_VERSION (a cold build downloads a large module graph)"
  tmp=$(mktemp -d "$prom_dir/.build.XXXXXX")
  # Prometheus 3.x is published as Go module v0.3MM.P for release 3.MM.P; promu stamps the release so.
  release=${PROMETHEUS_VERSION#v0.}
  release="${release:0:1}.$((10#${release:1:2})).${release#*.}"
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
    "$pkg/cmd/promtool@$PROMETHEUS_VERSION"
  mv "$tmp/promtool" "$prom_dir/promtool" && rmdir "$tmp"
}

# A cached binary that does not run (a broken build, another machine's) is rebuilt.
runs() { [ -x "$1" ] && "$@" >/dev/null 2>&1; }

built=0
{ runs "$k8s_dir/kube-apiserver" --version && runs "$k8s_dir/kubectl" version --client; } || { build_kubernetes; built=1; }
runs "$etcd_dir/etcd" --version || { build_etcd; built=1; }
runs "$helm_dir/helm" version --short || { build_helm; built=1; }
runs "$prom_dir/promtool" --version || { build_promtool; built=1; }

"$k8s_dir/kube-apiserver" --version >/dev/null 2>&1 || die "$k8s_dir/kube-apiserver was built but does not run"
"$k8s_dir/kubectl" version --client >/dev/null 2>&1 || die "$k8s_dir/kubectl was built but does not run"
"$etcd_dir/etcd" --version >/dev/null 2>&1 || die "$etcd_dir/etcd was built but does not run"
"$helm_dir/helm" version --short >/dev/null 2>&1 || die "$helm_dir/helm was built but does not run"
"$prom_dir/promtool" --version >/dev/null 2>&1 || die "$prom_dir/promtool was built but does not run"
ln -sfn "../kubernetes-$KUBERNETES_VERSION/kube-apiserver" "$out/kube-apiserver"
ln -sfn "../kubernetes-$KUBERNETES_VERSION/kubectl" "$out/kubectl"
ln -sfn "../etcd-$ETCD_VERSION/etcd" "$out/etcd"
ln -sfn "../helm-$HELM_VERSION-k8s/helm" "$out/helm"
ln -sfn "../prometheus-$PROMETHEUS_VERSION/promtool" "$out/promtool"
for n in "${names[@]}"; do [ -x "$out/$n" ] || die "$n is missing from $out"; done
if [ "$built" = 1 ]; then what=cold; else what=warm; fi
log "$what set-up: $(( $(date +%s) - start )) s (kube-apiserver $KUBERNETES_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION, promtool $PROMETHEUS_VERSION)"
printf '%s\n' "$out"
