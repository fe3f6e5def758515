#!/usr/bin/env bash
# Install edge on a gateway: a service user, directories, the unit, a signing key and the
# config in /etc/edge/. Offline: pass --wheels DIR (from `make wheels`); nothing is fetched
# at run time, ever.
#
#   sudo systemd/install.sh [--wheels DIR] [--config FILE] [--no-start]
#   DESTDIR=/tmp/root systemd/install.sh --no-start   # stage into a folder (tests, images)
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
wheels="" config="$here/devices.yaml" start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

prefix="$DESTDIR/opt/edge"
etc="$DESTDIR/etc/edge"
state="$DESTDIR/var/lib/edge"
unit_dir="$DESTDIR/etc/systemd/system"

# 1. the service user (no shell, no home); serial ports via dialout, a speaker via audio
if [ -z "$DESTDIR" ] && ! id edge >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /var/lib/edge --shell /usr/sbin/nologin \
    --groups dialout,audio edge
fi

# 2. the program in its own venv
install -d -m 0755 "$prefix"
python3 -m venv "$prefix/venv"
if [ -n "$wheels" ]; then
  "$prefix/venv/bin/pip" install --no-index --find-links "$wheels" edge
else
  "$prefix/venv/bin/pip" install -q "$here"
fi

# 3. config, keys, state (secrets 0600/0700, owned by the service user)
install -d -m 0750 "$etc" "$etc/keys" "$etc/pki"
install -d -m 0700 "$state"
if [ ! -e "$etc/devices.yaml" ]; then
  install -m 0640 "$config" "$etc/devices.yaml"
  echo "installed $etc/devices.yaml: edit gateway.id, uplink and devices, then run 'edge check'"
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
if [ -z "$DESTDIR" ]; then
  chown -R root:edge "$etc"
  chown edge:edge "$etc/keys" "$etc/keys/gateway.key" "$state"
fi

# 4. the unit
install -d -m 0755 "$unit_dir"
install -m 0644 "$here/systemd/edge.service" "$unit_dir/edge.service"
if [ -z "$DESTDIR" ] && [ "$start" = 1 ]; then
  systemctl daemon-reload
  systemctl enable --now edge.service
  systemctl --no-pager status edge.service || true
fi
echo "done. Check with: $prefix/venv/bin/edge check --config /etc/edge/devices.yaml"
