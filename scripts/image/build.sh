#!/usr/bin/env bash
# Builds the dify-guard image, dify-guard/dify-guard:<package.json version>, with podman and no
# container registry: the base image is assembled locally first (build-base.sh, skipped when it
# exists) and passed as BASE_IMAGE; `--pull=never` guarantees nothing is pulled. npm ci inside the
# build reaches only the npm registry; the CA bundle that this machine's npm trusts is handed to it
# as a build secret when NODE_EXTRA_CA_CERTS or npm's cafile names one (a TLS-intercepting proxy).
#
# Usage: scripts/image/build.sh [extra podman build options, e.g. --no-cache]
# Prints the image reference on its last stdout line.
set -euo pipefail
# shellcheck source=scripts/image/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_podman
ensure_commands node=nodejs git=git
bash "$image_dir/build-base.sh"

version=$(package_version)
[ -n "$version" ] || die "package.json has no version"
ref=$(image_ref)
revision=$(git -C "$repo_root" rev-parse HEAD 2>/dev/null || echo unknown)

ca_file=${NODE_EXTRA_CA_CERTS:-}
if [ -z "$ca_file" ] && command -v npm >/dev/null; then
  ca_file=$(npm config get cafile 2>/dev/null || true)
  [ "$ca_file" = null ] || [ "$ca_file" = undefined ] && ca_file=''
fi
secret_opt=()
if [ -n "$ca_file" ] && [ -s "$ca_file" ]; then
  secret_opt=(--secret "id=npm_ca,src=$ca_file")
  log "npm in the build trusts the CA bundle $ca_file (build secret npm_ca, not stored in the image)"
fi

started=$SECONDS
log "podman build $ref (base $base_image)"
podman build --pull=never \
  --build-arg "BASE_IMAGE=$base_image" \
  --build-arg "VERSION=$version" \
  --build-arg "REVISION=$revision" \
  "${secret_opt[@]}" \
  --tag "$ref" \
  --file "$repo_root/Dockerfile" \
  "$@" \
  "$repo_root" >&2
log "built $ref in $((SECONDS - started)) s; size $(podman image inspect --format '{{.Size}}' "$ref") bytes"
echo "$ref"
