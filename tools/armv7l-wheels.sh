#!/usr/bin/env bash
# Build, once, the armv7l wheels the package index does not have (docs/platforms.md):
#   cffi   one per CPython (a cp311 build in a Debian 12 root, cp313 in a Debian 13 root)
#   PyNaCl abi3: one build serves 3.11-3.13 (it bundles libsodium, so no system library;
#          ~23 min under qemu on 2 shared cores, cffi ~1.5 min)
# in Debian armhf roots run by qemu-user, into OUT (default wheels/local), where `make wheels`
# picks them up. Versions are the ones `make wheels` listed in wheels/cp3XX-armv7l/INCOMPLETE.
#
#   sudo tools/armv7l-wheels.sh [OUT]      # amd64 Debian, root, internet
#
# Needs: apt-get install qemu-user-static binfmt-support debootstrap. No Debian armhf Python
# 3.12 exists, so cp312-armv7l (Ubuntu 24.04 armhf) stays incomplete: build cffi there on one
# device, the same way (pip wheel --no-binary cffi cffi==VERSION), into wheels/local/.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-$here/wheels/local}")"
roots="${ARMV7L_ROOTS:-/var/tmp/edge-armv7l}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ "$(id -u)" != 0 ]; then echo "needs root (debootstrap, chroot)" >&2; exit 1; fi
for tool in debootstrap qemu-arm-static; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool: apt-get install qemu-user-static binfmt-support debootstrap" >&2
    exit 1
  }
done
# binfmt_misc lets the chroot's armhf programs start (containers often lack the mount)
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc \
  /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-arm >/dev/null 2>&1 || true

pin_of() {  # pin_of NAME -> the version make wheels wanted (NAME==VERSION in INCOMPLETE)
  { sed -n "s/^$1==//Ip" "${WHEELS:-$here/wheels}"/cp31*-armv7l/INCOMPLETE 2>/dev/null ||
    true; } | head -1
}
cffi="$(pin_of cffi)" pynacl="$(pin_of pynacl)"
if [ -z "$cffi" ] || [ -z "$pynacl" ]; then
  echo "run 'make wheels' first: wheels/cp3XX-armv7l/INCOMPLETE names the versions to build" >&2
  exit 1
fi

build_in() {  # build_in SUITE WHAT...   (WHAT: cffi and/or pynacl)
  local suite="$1" root="$roots/$1"
  shift
  if [ ! -x "$root/usr/bin/python3" ]; then
    debootstrap --arch=armhf --variant=minbase \
      --include=python3,python3-venv,python3-dev,gcc,make,libffi-dev,pkg-config \
      "$suite" "$root" "$mirror"
  fi
  mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
  # the build machine's CA bundle: a TLS-inspecting proxy's CA is in it, not in the root's
  cp /etc/ssl/certs/ca-certificates.crt "$root/root/host-ca.crt"
  mkdir -p "$root/root/out"
  local args=()
  for what in "$@"; do
    case "$what" in
      cffi) args+=("cffi==$cffi") ;;
      pynacl) args+=("pynacl==$pynacl") ;;
    esac
  done
  # cffi first: PyNaCl's isolated build environment takes it from out/ instead of compiling
  # it again; --no-binary NAME makes pip build that one, never take a wheel it may find
  chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root PIP_CERT=/root/host-ca.crt \
    LIBSODIUM_MAKE_ARGS=-j"$(nproc)" sh -euc '
      [ -x /root/bv/bin/pip ] || python3 -m venv /root/bv
      for req in "$@"; do
        name="${req%%==*}" version="${req#*==}"
        if [ -n "$(find /root/out -iname "$name-$version-*.whl")" ]; then continue; fi
        /root/bv/bin/pip wheel -q --no-deps --no-binary "$name" --find-links /root/out \
          -w /root/out "$req"
      done
      # pip tags a PyNaCl built from source cp3XX-cp3XX, but its extension is abi3 (limited
      # API, like the index'"'"'s cp38-abi3 wheels): retagged, one build serves every Python
      for w in /root/out/pynacl-*-cp3*-cp3*-linux_armv7l.whl; do
        [ -e "$w" ] || continue
        /root/bv/bin/python -m zipfile -l "$w" | grep -q "_sodium.abi3.so" || continue
        /root/bv/bin/pip install -q wheel
        /root/bv/bin/python -m wheel tags --python-tag cp38 --abi-tag abi3 --remove "$w"
      done' sh "${args[@]}"
  umount "$root/proc"
  mkdir -p "$out"
  cp "$root"/root/out/*.whl "$out/"
}

build_in bookworm cffi pynacl  # Debian 12: Python 3.11
build_in trixie cffi           # Debian 13: Python 3.13
ls -l "$out"
echo "now: make wheels (takes these from $out)"
# Debian armhf has Python 3.11 (12) and 3.13 (13), no 3.12; Ubuntu's armhf archive
# (ports.ubuntu.com) is another mirror this script does not assume reachable
echo "cp312-armv7l still lacks cffi: build it on one Ubuntu 24.04 armhf device (docs/platforms.md):" \
  "python3.12 -m venv /tmp/bv && /tmp/bv/bin/pip wheel --no-deps --no-binary cffi" \
  "-w /tmp/out cffi==$cffi; copy /tmp/out/cffi-*.whl into $out/"
