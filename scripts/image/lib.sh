# shellcheck shell=bash
# Shared by the image scripts (sourced, not run): paths, names, the project's podman settings, tools.
image_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$image_dir/../.." && pwd)
# Applies to podman build and podman run alike, without touching /etc/containers.
export CONTAINERS_CONF="$image_dir/containers.conf"

# shellcheck disable=SC2034 # used by the scripts that source this file
base_image=localhost/node:24-bookworm-slim
# shellcheck disable=SC2034
debian_image=localhost/debian:bookworm-slim
image_repo=localhost/dify-guard/dify-guard

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

# Reads a field of a JSON file with whatever node is on PATH (any version reads JSON).
json_field() { node -e 'const f=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));process.stdout.write(String(process.argv[2].split(".").reduce((o,k)=>o?.[k],f)??""))' "$1" "$2"; }
package_version() { json_field "$repo_root/package.json" version; }
image_ref() { printf '%s:%s' "$image_repo" "$(package_version)"; }

# Installs from Debian's packages whatever of the named commands is missing (command=package pairs).
ensure_commands() {
  local need=() pair
  for pair in "$@"; do command -v "${pair%%=*}" >/dev/null || need+=("${pair#*=}"); done
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing ${need[*]}: install them with apt-get (needs root)"
  log "installing ${need[*]} from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}

# podman with everything it needs here (overlay storage, runc, rootless helpers for other users).
ensure_podman() {
  ensure_commands podman=podman buildah=buildah runc=runc fuse-overlayfs=fuse-overlayfs \
    slirp4netns=slirp4netns newuidmap=uidmap
}
