#!/usr/bin/env bash
# Creates a CA and a dify-guard serving certificate with openssl (ECDSA P-256, SHA-256).
# The serving certificate names <service>.<namespace>.svc, <service>.<namespace>.svc.cluster.local,
# <service>, <service>.<namespace>, and (unless --no-local) localhost, 127.0.0.1 and ::1.
# An existing CA in the output folder is reused, so running it again renews only the serving
# certificate and the caBundle of the webhook configurations stays valid.
#
# Usage: certs/generate.sh --out DIR [--service dify-guard] [--namespace dify]
#          [--ca-days 1825] [--days 365] [--dns NAME]... [--ip ADDR]... [--no-local] [--new-ca]
# Writes DIR/ca.crt, DIR/ca.key, DIR/tls.crt, DIR/tls.key (keys mode 0600). Prints nothing secret.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'certs/generate.sh: %s\n' "$*" >&2; exit 2; }

out='' service=dify-guard namespace=dify ca_days=1825 days=365 local=1 new_ca=0
dns=() ips=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:-}; shift 2 ;;
    --service) service=${2:-}; shift 2 ;;
    --namespace) namespace=${2:-}; shift 2 ;;
    --ca-days) ca_days=${2:-}; shift 2 ;;
    --days) days=${2:-}; shift 2 ;;
    --dns) dns+=("${2:-}"); shift 2 ;;
    --ip) ips+=("${2:-}"); shift 2 ;;
    --no-local) local=0; shift ;;
    --new-ca) new_ca=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[ -n "$out" ] || die "--out DIR is required (see --help)"
[[ "$service" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "--service '$service' is not a DNS-1123 label"
[[ "$namespace" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "--namespace '$namespace' is not a DNS-1123 label"
[[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive whole number"
[[ "$ca_days" =~ ^[1-9][0-9]*$ ]] || die "--ca-days must be a positive whole number"
command -v openssl >/dev/null || die "openssl is not installed (Debian: apt-get install openssl)"

mkdir -p "$out"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "$new_ca" = 1 ] || [ ! -s "$out/ca.crt" ] || [ ! -s "$out/ca.key" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days "$ca_days" -subj "/CN=dify-guard-ca" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$tmp/ca.crt" 2>/dev/null
  mv "$tmp/ca.key" "$out/ca.key"; mv "$tmp/ca.crt" "$out/ca.crt"
fi

san="DNS:$service,DNS:$service.$namespace,DNS:$service.$namespace.svc,DNS:$service.$namespace.svc.cluster.local"
for d in "${dns[@]}"; do san="$san,DNS:$d"; done
if [ "$local" = 1 ]; then san="$san,DNS:localhost,IP:127.0.0.1,IP:::1"; fi
for i in "${ips[@]}"; do san="$san,IP:$i"; done

openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/tls.key" 2>/dev/null
openssl req -new -key "$tmp/tls.key" -subj "/CN=$service.$namespace.svc" -out "$tmp/tls.csr" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$san" > "$tmp/ext"
openssl x509 -req -in "$tmp/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -CAserial "$tmp/ca.srl" -days "$days" -sha256 -extfile "$tmp/ext" -out "$tmp/tls.crt" 2>/dev/null
# Written beside the final names, then renamed, so a watcher never reads a half-written pair.
chmod 0644 "$tmp/tls.crt"
mv "$tmp/tls.key" "$out/tls.key.new" && mv "$tmp/tls.crt" "$out/tls.crt.new"
mv "$out/tls.key.new" "$out/tls.key" && mv "$out/tls.crt.new" "$out/tls.crt"
chmod 0644 "$out/ca.crt"
printf 'certs/generate.sh: wrote %s/{ca.crt,ca.key,tls.crt,tls.key} for %s\n' "$out" "$san"
