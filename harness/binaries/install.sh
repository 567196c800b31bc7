#!/usr/bin/env bash
# Provides kube-apiserver, kubectl, etcd, helm, promtool (and, for the cluster tier, kube-controller-manager,
# kube-scheduler, kwok and kwok's stages) at the versions pinned in versions.env, built with
# Go from the Go module proxy into a gitignored cache, and prints the folder that holds them on its
# last line of standard output. Each component (kubernetes, etcd, helm, prometheus, kwok) is cached under its own
# version and rebuilt only when that pin changes; concurrent runs wait for one another (flock).
#
# DIFY_GUARD_TEST_ASSETS (or KUBEBUILDER_ASSETS) names a folder of existing binaries instead: they
# are checked, not built. DIFY_GUARD_BIN_CACHE moves the cache (default: <repo>/.cache/bin).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

log() { printf '[binaries] %s\n' "$*" >&2; }
die() { printf '[binaries] ERROR: %s\n' "$*" >&2; exit 1; }
names=(kube-apiserver kubectl etcd helm promtool)
# The cluster tier: a controller manager, a scheduler and kwok's simulated nodes.
names+=(kube-controller-manager kube-scheduler kwok kwok-stages.yaml)
# Built together from one wrapper module of KUBERNETES_VERSION.
k8s_commands=(kube-apiserver kubectl kube-controller-manager kube-scheduler)
# A program must be executable; kwok's stages file only readable.
usable() { case $1 in *.yaml) [ -r "$1" ] ;; *) [ -x "$1" ] ;; esac; }

assets=${DIFY_GUARD_TEST_ASSETS:-${KUBEBUILDER_ASSETS:-}}
if [ -n "$assets" ]; then
  for n in "${names[@]}"; do
    usable "$assets/$n" || die "$assets/$n is missing or not executable (DIFY_GUARD_TEST_ASSETS=$assets)"
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
out="$cache/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-prometheus-$PROMETHEUS_VERSION-kwok-$KWOK_VERSION"
src="$cache/src"
mkdir -p "$out" "$src" "$k8s_dir" "$etcd_dir" "$helm_dir" "$prom_dir"
start=$(date +%s)

# Binaries built by the first version of this script sit directly in $out: adopt them.
for pair in "kube-apiserver:$k8s_dir" "kubectl:$k8s_dir" "etcd:$etcd_dir" "helm:$helm_dir"; do
  n=${pair%%:*} d=${pair#*:}
  if [ -f "$out/$n" ] && [ ! -L "$out/$n" ] && [ ! -e "$d/$n" ]; then mv "$out/$n" "$d/$n"; fi
done

need_go() {
  command -v go >/dev/null || die "go is not installed: Go >= 1.26 is needed to build the binaries pinned in versions.env (or set DIFY_GUARD_TEST_ASSETS to a folder holding them)"
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
  log "building $* $v (a cold build takes several minutes)"
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
  printf '//go:build tools\n\npackage tools\n\nimport (\n' > "$dir/tools.go"
  for c in "${k8s_commands[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done >> "$dir/tools.go"
  printf ')\n' >> "$dir/tools.go"
  (cd "$dir" && { go mod tidy >/dev/null 2>&1 || go mod tidy; })
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  local c
  local c t0
  for c in "$@"; do
    t0=$(date +%s)
    (cd "$dir" && build_to "$k8s_dir/$c" "k8s.io/kubernetes/cmd/$c" -trimpath -ldflags "$ld")
    log "built $c $v in $(( $(date +%s) - t0 )) s"
  done
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
# kwok and its stages (the cluster tier).
kwok_dir=$cache/kwok-$KWOK_VERSION
mkdir -p "$kwok_dir"
# The stages kwokctl gives a cluster by default (node initialize and lease heartbeat; pod ready, Job
# pod complete, pod delete), copied from the same kwok release, so the pin stays the one source.
build_kwok() {
  need_go
  local tmp mod stage t0
  t0=$(date +%s)
  log "building kwok $KWOK_VERSION"
  tmp=$(mktemp -d "$kwok_dir/.build.XXXXXX")
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mod=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [ -d "$mod/kustomize/stage" ] || die "could not find the stages of kwok $KWOK_VERSION in the module cache"
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    printf -- '---\n# sigs.k8s.io/kwok@%s kustomize/stage/%s.yaml\n' "$KWOK_VERSION" "$stage"
    cat "$mod/kustomize/stage/$stage.yaml"
  done > "$tmp/kwok-stages.yaml"
  mv "$tmp/kwok-stages.yaml" "$kwok_dir/kwok-stages.yaml"
  mv "$tmp/kwok" "$kwok_dir/kwok" && rmdir "$tmp"
  log "built kwok $KWOK_VERSION in $(( $(date +%s) - t0 )) s"
}

# A cached binary that does not run (a broken build, another machine's) is rebuilt.
runs() { [ -x "$1" ] && "$@" >/dev/null 2>&1; }

built=0
k8s_missing=()
runs "$k8s_dir/kube-apiserver" --version || k8s_missing+=(kube-apiserver)
runs "$k8s_dir/kubectl" version --client || k8s_missing+=(kubectl)
for c in kube-controller-manager kube-scheduler; do runs "$k8s_dir/$c" --version || k8s_missing+=("$c"); done
{ runs "$kwok_dir/kwok" --version && [ -s "$kwok_dir/kwok-stages.yaml" ]; } || { build_kwok; built=1; }
if [ "${#k8s_missing[@]}" -gt 0 ]; then build_kubernetes "${k8s_missing[@]}"; built=1; fi
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
for c in kube-controller-manager kube-scheduler; do
  "$k8s_dir/$c" --version >/dev/null 2>&1 || die "$k8s_dir/$c was built but does not run"
  ln -sfn "../kubernetes-$KUBERNETES_VERSION/$c" "$out/$c"
done
"$kwok_dir/kwok" --version >/dev/null 2>&1 || die "$kwok_dir/kwok was built but does not run"
ln -sfn "../kwok-$KWOK_VERSION/kwok" "$out/kwok"
ln -sfn "../kwok-$KWOK_VERSION/kwok-stages.yaml" "$out/kwok-stages.yaml"
for n in "${names[@]}"; do usable "$out/$n" || die "$n is missing from $out"; done
if [ "$built" = 1 ]; then what=cold; else what=warm; fi
log "$what set-up: $(( $(date +%s) - start )) s (kube-apiserver $KUBERNETES_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION, promtool $PROMETHEUS_VERSION)"
printf '%s\n' "$out"
