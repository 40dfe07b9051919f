#!/usr/bin/env bash
# Build pdvault's image (deploy/Dockerfile, unchanged) with podman and run it as a pod runs it:
# read-only root file system, uid 10001, the data directory on a mounted volume, the API port
# with TLS published to the host's loopback, the plaintext health-only port beside it. From the
# host: the health port says SERVING (liveness and readiness), `pdv tokenize` and `pdv detokenize`
# go through the container, then `podman stop` (SIGTERM) must end it with exit code 0 and
# pdvault's final log line. `make image` runs it; under CI=true `make test` does too.
#
# Made for the CI host: Debian 12, run as root, reaching Debian's mirror and PyPI but no
# container registry, its HTTPS clients trusting /etc/ssl/certs/ca-certificates.crt. The base
# image `debian:bookworm-slim` is made with debootstrap from the mirror apt already uses (as the
# official slim image is made); on a machine with a registry plain
# `podman build -f deploy/Dockerfile .` (or docker build) is all it takes.
#
# Environment:
#   IMAGE       the tag to build (localhost/pdvault:ci)
#   PYTHON      a Python with pdvault installed, for the certificates and the calls (.venv/bin/python)
#   WORK        scratch directory (/var/tmp/pdvault-image); the base image stays in podman's store
#   BUILD_ONLY=1  build, then stop
#   CLEAN=1     remove the built image at the end (CLEAN=all: the base image too)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/pdvault:ci}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=${WORK:-/var/tmp/pdvault-image}
CLEAN=${CLEAN:-0}
# What "FROM debian:bookworm-slim" resolves to (podman's short-name alias for docker.io).
BASE=docker.io/library/debian:bookworm-slim
NAME=pdvault-ci-$$
t0=$SECONDS
say() { printf '[image %4ds] %s\n' $((SECONDS - t0)) "$*"; }
fail() { printf 'deploy/ci-image.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (it installs podman from Debian's packages and runs it rootful)"
mkdir -p "$WORK"

# -- 1. podman, runc and debootstrap from Debian's packages ------------------------------------
# runc rather than crun: crun 1.8 refuses hosts whose cgroup v2 tree holds a controller while
# v1 hierarchies are mounted too ("cgroups in hybrid mode not supported"), as our CI hosts do.
missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman runc debootstrap uidmap slirp4netns netavark aardvark-dns iptables >/dev/null
fi

# -- 2. podman's configuration, private to this script -----------------------------------------
# The CI host lacks CAP_SYS_RESOURCE: podman's default rlimits (nofile 1048576) would fail with
# "setrlimit RLIMIT_NOFILE: Operation not permitted", so they stay within the host's hard limits.
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu); { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
cat > "$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
CONF
export CONTAINERS_CONF=$WORK/containers.conf

# -- 3. the base image, without a registry ------------------------------------------------------
make_base() {
  local sources=/etc/apt/sources.list.d/debian.sources mirror rootfs=$WORK/rootfs
  if [ -f "$sources" ]; then
    mirror=$(sed -n 's/^URIs:[[:space:]]*//p' "$sources" | grep -v -- -security | head -n1 || true)
  else
    sources=/etc/apt/sources.list
    mirror=$(awk '$1 == "deb" { print $2; exit }' "$sources" 2>/dev/null || true)
  fi
  [ -n "$mirror" ] || fail "no Debian mirror in $sources"
  rm -rf --one-file-system "$rootfs"
  say "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log"; fail "debootstrap failed"; }
  grep -q " $rootfs/" /proc/mounts && fail "debootstrap left mounts under $rootfs"
  # As the official slim image: no package caches, lists, documentation or locales, its dpkg
  # and apt settings, the host's apt sources (the same mirror and keyring), an empty /dev.
  (
    cd "$rootfs"
    rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* var/log/apt/* \
      var/log/*.log tmp/* usr/share/man/* usr/share/info/* usr/share/groff/* usr/share/lintian/* \
      usr/share/linda/* etc/resolv.conf etc/hostname etc/apt/sources.list
    rm -rf --one-file-system dev/*
    find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
    find usr/share/doc -mindepth 1 -type d -empty -delete
    find usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    printf 'path-exclude /usr/share/%s\n' 'doc/*' 'groff/*' 'info/*' 'linda/*' \
      'lintian/overrides/*' 'locale/*' 'man/*' > etc/dpkg/dpkg.cfg.d/docker
    echo 'path-include /usr/share/doc/*/copyright' >> etc/dpkg/dpkg.cfg.d/docker
    echo force-unsafe-io > etc/dpkg/dpkg.cfg.d/docker-apt-speedup
    printf 'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n' > etc/apt/apt.conf.d/docker-clean
    echo 'Acquire::GzipIndexes "true";' > etc/apt/apt.conf.d/docker-gzip-indexes
    echo 'Acquire::Languages "none";' > etc/apt/apt.conf.d/docker-no-languages
    echo 'Apt::AutoRemove::SuggestsImportant "false";' > etc/apt/apt.conf.d/docker-autoremove-suggests
  )
  case "$sources" in
    *.sources) grep -v '^#' "$sources" > "$rootfs/etc/apt/sources.list.d/debian.sources" ;;
    *) grep -v '^#' "$sources" > "$rootfs/etc/apt/sources.list" ;;
  esac
  tar --numeric-owner -C "$rootfs" -c . | podman import --quiet --change 'CMD ["bash"]' - "$BASE" >/dev/null
  rm -rf --one-file-system "$rootfs"
  say "base image $BASE: $(podman image inspect -f '{{.Size}}' "$BASE") bytes"
}
podman image exists "$BASE" || make_base

# -- 4. the image, from deploy/Dockerfile as it is ----------------------------------------------
# --pull=never: no registry is ever asked. pip inside RUN trusts the host's CA bundle through
# two read-only mounts that exist only while RUN steps run (the bundle on /dev leaves nothing in
# the image; buildah leaves an empty /etc/pip.conf mount point behind).
printf '[global]\ncert = /dev/ci-ca.crt\n' > "$WORK/pip.conf"
say "podman build -f deploy/Dockerfile -t $IMAGE ."
podman build --pull=never -f deploy/Dockerfile -t "$IMAGE" \
  -v /etc/ssl/certs/ca-certificates.crt:/dev/ci-ca.crt:ro \
  -v "$WORK/pip.conf:/etc/pip.conf:ro" \
  . > "$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log"; fail "podman build failed"; }
user=$(podman image inspect -f '{{.Config.User}}' "$IMAGE")
say "built $IMAGE: $(podman image inspect -f '{{.Size}}' "$IMAGE") bytes, user $user"
[ "$user" = 10001:10001 ] || fail "the image runs as '$user', not 10001:10001"
# (dash's `command -v a b` stops at the first name it does not find: one name at a time.)
if podman run --rm --entrypoint /bin/sh "$IMAGE" -c \
  'for tool in gcc cc c++ make pip pip3; do command -v "$tool"; done; ls -d /usr/lib/gcc 2>/dev/null' | grep .; then
  fail "a compiler, make or pip is in the final image"
fi
[ "${BUILD_ONLY:-0}" = 1 ] && { say "built (BUILD_ONLY=1: not run)"; exit 0; }

# -- 5. run it as a pod would -------------------------------------------------------------------
[ -x "$PYTHON" ] || fail "no $PYTHON: run make first (or set PYTHON to a Python with pdvault)"
run=$WORK/run
rm -rf "$run"
mkdir -p "$run/data" "$run/tls" "$run/client"
# The data volume belongs to the image's user (on Kubernetes: fsGroup); TLS files as a Secret
# mounted with defaultMode 0400 and fsGroup 10001 arrives: root's, group 10001, mode 0440.
chown 10001:10001 "$run/data"
chmod 0700 "$run/data"
"$PYTHON" scripts/image_support.py certs "$run/tls" localhost
chown root:10001 "$run/tls/server.key" "$run/tls/server.crt"
chmod 0440 "$run/tls/server.key" "$run/tls/server.crt"
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
health_port=$(free_port)
cleanup() { podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
# Two CPUs: pdvault derives PDV_PROCESSES from the cgroup's quota (2), so PID 1 is the parent
# that must pass SIGTERM on to its children and still exit 0.
podman run -d --name "$NAME" --read-only --cpus 2 \
  --cap-drop ALL --security-opt no-new-privileges \
  -p "127.0.0.1:$api_port:50051" -p "127.0.0.1:$health_port:8081" \
  -v "$run/data:/var/lib/pdvault" -v "$run/tls:/etc/pdvault/tls:ro" \
  -e PDV_TLS_CERT=/etc/pdvault/tls/server.crt -e PDV_TLS_KEY=/etc/pdvault/tls/server.key \
  -e PDV_SHUTDOWN_PAUSE=1 \
  "$IMAGE" >/dev/null
say "started $NAME: API 127.0.0.1:$api_port (TLS), health 127.0.0.1:$health_port"

show_logs() { podman logs "$NAME" 2>&1 | tail -n 40; }
"$PYTHON" scripts/image_support.py health "127.0.0.1:$health_port" --wait 120 liveness "" pdvault.v1.TokenService \
  || { show_logs; fail "the health port did not say SERVING"; }
podman logs "$NAME" 2>&1 | grep -q "listening on 0.0.0.0:50051 (2 processes" \
  || { show_logs; fail "expected 2 processes from --cpus 2"; }
[ "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$NAME")" = true ] || fail "root file system not read-only"
[ "$(podman exec "$NAME" id -u)" = 10001 ] || fail "not running as uid 10001"

# The demo callers' keys, written by pdv serve into the data volume, as files for PDV_API_KEY_FILE.
for caller in kyc payment; do
  "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
    "$run/data/dev-credentials.json" "$caller" > "$run/client/$caller.key"
done
export PDV_ADDR=127.0.0.1:$api_port PDV_TLS_CA=$run/tls/ca.crt PDV_TLS_SERVER_NAME=localhost
pdv() { "$PYTHON" -m pdvault_client.cli "$@"; }
token=$(PDV_API_KEY_FILE=$run/client/kyc.key pdv tokenize --subject ci-1 --category card_number 4111111111111111)
value=$(PDV_API_KEY_FILE=$run/client/payment.key pdv detokenize --purpose payment "$token")
[ "$value" = 4111111111111111 ] || fail "detokenize through the container gave '$value'"
say "tokenize and detokenize through the container: OK ($token)"
if grep -rqa 4111111111111111 "$run/data"; then fail "the card number is in the data volume in clear"; fi

# -- 6. stop it as Kubernetes does: SIGTERM, then SIGKILL after the grace period ----------------
podman stop -t 30 "$NAME" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
podman logs "$NAME" > "$WORK/container.log" 2>&1
tail -n 8 "$WORK/container.log"
[ "$code" = 0 ] || fail "exit code $code after SIGTERM, not 0"
tail -n 1 "$WORK/container.log" | grep -q "pdvault stopped" || fail "no final log line"
say "stopped with SIGTERM: exit code 0"

# Images an earlier build left untagged go after a day (a newer build's layers stay: its cache).
podman image prune -f --filter until=24h >/dev/null
case "$CLEAN" in
  all) podman rmi -f "$IMAGE" "$BASE" >/dev/null ;;
  1) podman rmi -f "$IMAGE" >/dev/null ;;
esac
say "image stage passed"
