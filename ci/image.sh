#!/usr/bin/env bash
# Build the image from the Dockerfile as far as this machine allows, and check what is in it.
#
# Base images cannot be pulled here, so the Dockerfile's two FROM images are supplied locally:
# - the build stage by `--build-context build=DIR`, DIR holding the binary built here with the
#   Dockerfile's own flags (`--locked -p storefront --no-default-features`; the test profile
#   rather than release, to reuse what CI has built: the image's code is the same);
# - the runtime base by `--build-arg RUNTIME_BASE`: a FROM scratch image with the binary's
#   shared libraries and the nonroot user 65532, which is what distroless `cc` provides.
# The runtime stage is the Dockerfile's, as it is. podman cannot start a container in this
# sandbox (crun: setrlimit RLIMIT_NOFILE: Operation not permitted), so the image's file system
# is exported and its binary run from it with chroot, as user 65532.
# Leaves $CARGO_TARGET_DIR/debug/storefront built without the demo feature (cargo relinks it for
# tests).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v podman >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing podman (apt)"
    apt-get install -y -qq podman >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq podman >/dev/null; }
  else
    echo "ci/image.sh needs podman (apt-get install podman)" >&2
    exit 1
  fi
fi
if [ "$(id -u)" != 0 ]; then
  echo "ci/image.sh needs root (podman storage, chroot)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --quiet --profile test --locked -p storefront --no-default-features --bin storefront
binary="${CARGO_TARGET_DIR:-target}/debug/storefront"
mkdir -p "$work/build" "$work/base/rootfs/etc"
install -m 0755 "$binary" "$work/build/storefront"
# glibc and libgcc: every shared library the binary loads, at its own path.
for library in $(ldd "$binary" | awk '/=>/ { print $3 } /^[ \t]*\/.*ld-linux/ { print $1 }'); do
  mkdir -p "$work/base/rootfs$(dirname "$library")"
  cp -L "$library" "$work/base/rootfs$library"
done
echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$work/base/rootfs/etc/passwd"
echo 'nonroot:x:65532:' > "$work/base/rootfs/etc/group"
printf 'FROM scratch\nCOPY rootfs/ /\n' > "$work/base/Containerfile"
podman build --quiet -t localhost/storefront-base:ci "$work/base" >/dev/null
podman build --quiet \
  --build-context "build=$work/build" \
  --build-arg RUNTIME_BASE=localhost/storefront-base:ci \
  -t localhost/storefront:ci . >/dev/null

fail() { echo "image: $*" >&2; exit 1; }
config=$(podman image inspect --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}' localhost/storefront:ci)
[ "$config" = '65532:65532|["/usr/local/bin/storefront"]|["run","--config","/etc/storefront/config/storefront.toml"]' ] \
  || fail "user, entrypoint or command: $config"

container=$(podman create localhost/storefront:ci)
mkdir "$work/root"
podman export "$container" | tar -x -C "$work/root"
podman rm "$container" >/dev/null
[ -x "$work/root/usr/local/bin/storefront" ] || fail "no /usr/local/bin/storefront"
for shell in bin/sh bin/bash usr/bin/sh; do
  [ ! -e "$work/root/$shell" ] || fail "a shell in the image: /$shell"
done

# What the Deployment mounts: the ConfigMap's directory and the Secret's files.
mkdir -p "$work/root/etc/storefront/config" "$work/root/etc/storefront/secrets"
cp deploy/kubernetes/base/storefront.toml "$work/root/etc/storefront/config/"
printf 'AKIDEXAMPLE' > "$work/root/etc/storefront/secrets/access_key"
printf 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' > "$work/root/etc/storefront/secrets/secret_key"
version=$(chroot --userspec=65532:65532 "$work/root" /usr/local/bin/storefront --version)
chroot --userspec=65532:65532 "$work/root" /usr/local/bin/storefront check-config /etc/storefront/config/storefront.toml \
  || fail "the base configuration does not validate inside the image"
if chroot --userspec=65532:65532 "$work/root" /usr/local/bin/storefront demo --help >/dev/null 2>&1; then
  fail "the image's binary has the demo (built with its default features)"
fi
echo "ok: image localhost/storefront:ci ($version, $(du -sh "$work/root" | cut -f1)): user 65532, no shell, no demo; the base configuration validates in it"
