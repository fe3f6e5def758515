#!/usr/bin/env bash
# Install edge on a gateway: a service user, directories, the unit, a signing key and the
# site config in /etc/edge/. Offline: pass --wheels DIR (from `make wheels`); nothing is
# fetched at run time, ever. DIR is either `make wheels`' output folder, from which the house
# matching this gateway's python3 and CPU (e.g. cp313-aarch64) is picked, or one house.
#
#   sudo systemd/install.sh [--wheels DIR] [--config FILE] [--user NAME] [--no-start]
#   DESTDIR=/tmp/root systemd/install.sh --no-start   # stage into a folder (tests, images)
#
# The config it installs is systemd/devices.site.yaml: absolute paths to exactly the places
# made here (/etc/edge/keys, /etc/edge/pki, /var/lib/edge). The repository's devices.yaml is
# the demo's, with paths relative to its folder, and is not meant for /etc/edge.
# With --no-start the unit is installed and enabled at the next boot only after you start it:
# edit /etc/edge/devices.yaml until `edge check` passes, then `systemctl enable --now edge`.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
wheels="" config="$here/systemd/devices.site.yaml" start=1 user=edge
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --user) user="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# Which wheelhouse: decided before anything on the system changes. The gateway's own python3
# names its target; `make wheels` wrote a TARGET file into every house (docs/platforms.md).
if [ -n "$wheels" ]; then
  want="$(python3 - <<'PY'
import platform, struct, sys
machine = platform.machine()
if struct.calcsize("P") == 4 and machine in ("aarch64", "arm64", "armv8l"):
    # a 32-bit userland on a 64-bit kernel (32-bit Raspberry Pi OS on a Pi 4/5): uname says
    # aarch64, but the interpreter runs armv7l code and needs armv7l wheels
    machine = "armv7l"
elif machine == "arm64":
    machine = "aarch64"
libc = "" if platform.libc_ver()[0] == "glibc" else "-nonglibc"  # manylinux needs glibc
print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{machine}{libc}")
PY
)"
  house_of() { sed -n 's/.*"target": *"\([^"]*\)".*/\1/p' "$1/TARGET" 2>/dev/null; }
  if [ -f "$wheels/TARGET" ]; then
    house="$wheels"
  elif [ -d "$wheels/$want" ]; then
    house="$wheels/$want"
  elif ls "$wheels"/edge-*.whl >/dev/null 2>&1; then
    house="$wheels"  # a hand-made house without a TARGET file: pip decides
  else
    have="$(for d in "$wheels"/*/; do if [ -f "$d/TARGET" ]; then house_of "$d"; fi; done |
      tr '\n' ' ')"
    echo "no wheelhouse for this gateway ($want) in $wheels; it has: ${have:-none}" >&2
    echo "build it with 'make wheels' on a connected machine (docs/platforms.md)" >&2
    exit 1
  fi
  got="$(house_of "$house")"
  if [ -f "$house/TARGET" ] && [ "$got" != "$want" ]; then
    echo "wheelhouse $house is for $got; this gateway's python3 needs $want" >&2
    exit 1
  fi
  if [ -f "$house/INCOMPLETE" ]; then
    echo "wheelhouse $house is incomplete (no wheel for: $(tr '\n' ' ' < "$house/INCOMPLETE"))" >&2
    echo "see docs/platforms.md to build the missing wheels once" >&2
    exit 1
  fi
  echo "using wheelhouse $house (this gateway: $want)"
  wheels="$house"
fi

prefix="$DESTDIR/opt/edge"
etc="$DESTDIR/etc/edge"
state="$DESTDIR/var/lib/edge"
unit_dir="$DESTDIR/etc/systemd/system"
bin_dir="$DESTDIR/usr/local/bin"

# 1. the service user (no shell, no home); serial ports via dialout, a speaker via audio.
# A staged install (DESTDIR) never creates users on the build machine; it hands its files to
# the user only if that user already exists here (the staged-install test makes one).
if [ -z "$DESTDIR" ] && ! id "$user" >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /var/lib/edge --shell /usr/sbin/nologin \
    --groups dialout,audio "$user"
fi
own=0
if [ "$(id -u)" = 0 ] && id "$user" >/dev/null 2>&1; then own=1; fi

# 2. the program in its own venv, and `edge` on the PATH
install -d -m 0755 "$prefix"
python3 -m venv "$prefix/venv"
if [ -n "$wheels" ]; then
  "$prefix/venv/bin/python" -m pip install --no-index --find-links "$wheels" edge
else
  "$prefix/venv/bin/python" -m pip install -q "$here"
fi
if [ -n "$DESTDIR" ]; then
  # pip wrote the staging folder into every script's #! line; the image runs from /opt/edge
  for f in "$prefix/venv/bin/"*; do
    if [ -f "$f" ] && [ ! -L "$f" ]; then sed -i "1s|^#!$DESTDIR/opt/edge/|#!/opt/edge/|" "$f"; fi
  done
fi
install -d -m 0755 "$bin_dir"
ln -sfn /opt/edge/venv/bin/edge "$bin_dir/edge"

# 3. config, keys, state (secrets 0600/0700, owned by the service user)
install -d -m 0750 "$etc" "$etc/keys" "$etc/pki"
install -d -m 0700 "$state"
if [ ! -e "$etc/devices.yaml" ]; then
  install -m 0640 "$config" "$etc/devices.yaml"
  echo "installed /etc/edge/devices.yaml: edit gateway, uplink, buses and devices, then run 'edge check'"
fi
if [ ! -e "$etc/keys/gateway.key" ]; then
  "$prefix/venv/bin/python" - "$etc/keys/gateway.key" <<'PY'
import sys
from pathlib import Path
from edge.keys import describe, init_key
key = init_key(Path(sys.argv[1]))
print("gateway key created; register with the platform:", describe(key))
PY
fi
if [ "$own" = 1 ]; then
  group="$(id -gn "$user")"
  chown -R "root:$group" "$etc"
  chown "$user:$group" "$etc/keys" "$etc/keys/gateway.key" "$state"
fi

# 4. the unit (its User= and Group= follow --user)
install -d -m 0755 "$unit_dir"
if [ "$user" = edge ]; then
  install -m 0644 "$here/systemd/edge.service" "$unit_dir/edge.service"
else
  sed -e "s/^User=edge$/User=$user/" -e "s/^Group=edge$/Group=$user/" \
    "$here/systemd/edge.service" > "$unit_dir/edge.service"
  chmod 0644 "$unit_dir/edge.service"
fi
if [ -z "$DESTDIR" ] && [ "$start" = 1 ]; then
  systemctl daemon-reload
  systemctl enable --now edge.service
  systemctl --no-pager status edge.service || true
fi
cat <<EOT
done. Next:
  edge keys show                  # the kid and public key the platform registers
  edge check                      # reads /etc/edge/devices.yaml; fix until every line is ✔
EOT
if [ "$start" = 0 ]; then
  echo "  systemctl enable --now edge     # not started (--no-start)"
fi
