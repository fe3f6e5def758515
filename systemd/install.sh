#!/usr/bin/env bash
# Install edge on a gateway: a service user, directories, the unit, a signing key and the
# site config in /etc/edge/. Offline: pass --wheels DIR (from `make wheels`); nothing is
# fetched at run time, ever. DIR is either `make wheels`' output folder, from which the house
# matching the interpreter and CPU (e.g. cp313-aarch64) is picked, or one house.
#
#   sudo systemd/install.sh [--wheels DIR] [--config FILE] [--user NAME] [--python PATH]
#                           [--no-start]
#   DESTDIR=/tmp/root systemd/install.sh --no-start   # stage into a folder (tests, images)
#
# The config it installs is systemd/devices.site.yaml: absolute paths to exactly the places
# made here (/etc/edge/keys, /etc/edge/pki, /var/lib/edge). The repository's devices.yaml is
# the demo's, with paths relative to its folder, and is not meant for /etc/edge.
# The venv is built on the system interpreter (/usr/bin/python3, or --python PATH), never on
# whatever python3 is first on PATH: a pyenv python under /root makes a venv the service user
# cannot run ("Permission denied"). The interpreter is tried as the service user first, and
# `edge --version` as the service user runs before the service is enabled and started.
# With --no-start the unit is installed and enabled at the next boot only after you start it:
# edit /etc/edge/devices.yaml until `edge check` passes, then `systemctl enable --now edge`.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
wheels="" config="$here/systemd/devices.site.yaml" start=1 user=edge python=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --user) user="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;  # the header above
    *) echo "unknown option $1 (--help lists them)" >&2; exit 2 ;;
  esac
done
# NAME goes into useradd, runuser and the unit's sed: a user name and nothing else
if ! [[ "$user" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]]; then
  printf -- '--user %q: not a valid user name (lower-case letters, digits, _ and -, at most' \
    "$user" >&2
  echo " 32, not starting with a digit or -)" >&2
  exit 2
fi

# Which interpreter: the system's unless told; what it really runs (a pyenv shim execs another)
if [ -z "$python" ]; then
  if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python="$(command -v python3)"; fi
fi
if ! real_python="$("$python" -c 'import os, sys
print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))' 2>/dev/null)"; then
  echo "cannot run $python; pass --python PATH (a python3.11 or newer)" >&2
  exit 1
fi
# Its version against requires-python, before anything changes: pip would refuse it only
# after the user and the venv exist, and `make wheels` has no house for it either
supported="$(sed -n 's/^requires-python *= *"\(.*\)"/\1/p' "$here/pyproject.toml")"
if [ -n "$supported" ] && ! version_says="$("$python" - "$supported" <<'PY'
import sys
have = sys.version_info[:2]
low, high, ok = "", "", True
for clause in sys.argv[1].split(","):
    clause = clause.strip()
    op = clause.rstrip("0123456789.")
    want = tuple(int(x) for x in clause[len(op):].split(".")[:2])
    if op == ">=":
        ok, low = ok and have >= want, "%d.%d" % want
    elif op == "<":
        ok, high = ok and have < want, "%d.%d" % (want[0], want[1] - 1)
print("%d.%d" % have, low, high)
sys.exit(0 if ok else 1)
PY
)"; then
  read -r have low high <<< "$version_says"
  echo "refusing $python: $python is Python $have; edge needs Python $low to $high" \
    "(requires-python $supported). Pass --python PATH to one: Debian 12 has python3.11," \
    "Ubuntu 24.04 python3.12, Debian 13 python3.13 (docs/platforms.md)" >&2
  exit 1
fi
# pip sees no pip.conf and no PIP_* variable: a machine-wide find-links or index would let a
# damaged wheelhouse pass the check below, or install what is not in it
pip_clean() {
  env $(compgen -e | sed -n 's/^PIP_/-u PIP_/p') PIP_CONFIG_FILE=/dev/null \
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
}
# an interpreter under a home folder others cannot enter (/root/.pyenv, ~/.local) builds a
# venv only its owner can run; said here, before anything changes
home_blocks="$("$real_python" - "$real_python" <<'PY'
import os, stat, sys
from pathlib import Path
path = Path(sys.argv[1])
homes = {Path("/root"), Path("/home")}
homes.update(Path(p) for p in [os.environ.get("HOME", "")] if p)
for parent in path.parents:
    if any(parent == h or parent.is_relative_to(h) for h in homes if str(h) != "/") and \
            not parent.stat().st_mode & stat.S_IXOTH:
        print(parent)
        break
PY
)"
python_refused() {
  echo "refusing $python ($real_python): the service user $user $1; pass --python with an" \
    "interpreter outside home folders, e.g. --python /usr/bin/python3" >&2
  exit 1
}
if [ -n "$home_blocks" ]; then
  python_refused "cannot enter $home_blocks, where it lives (a pyenv or user install)"
fi

# Which wheelhouse: decided before anything on the system changes. The interpreter the venv
# is built on names its target; `make wheels` wrote a TARGET file into every house
# (docs/platforms.md).
if [ -n "$wheels" ]; then
  if [ ! -d "$wheels" ]; then
    echo "--wheels $wheels: no such folder (copy make wheels' output there first)" >&2
    exit 1
  fi
  want="$("$python" - <<'PY'
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
    echo "wheelhouse $house is for $got; this gateway's $python needs $want" >&2
    exit 1
  fi
  if [ -f "$house/INCOMPLETE" ]; then
    echo "wheelhouse $house is incomplete (no wheel for: $(tr '\n' ' ' < "$house/INCOMPLETE"))" >&2
    echo "see docs/platforms.md to build the missing wheels once" >&2
    exit 1
  fi
  # the glibc the house's manylinux wheels were chosen for (TARGET's glibc_min)
  glibc_min="$(sed -n 's/.*"glibc_min": *"\([^"]*\)".*/\1/p' "$house/TARGET" 2>/dev/null)"
  if [ -n "$glibc_min" ]; then
    glibc_have="$("$python" -c 'import os
print((os.confstr("CS_GNU_LIBC_VERSION") or "").split()[-1])' 2>/dev/null || true)"
    if ! "$python" -c 'import sys
have, need = ([int(x) for x in v.split(".")[:2]] for v in sys.argv[1:])
sys.exit(have < need)' "$glibc_have" "$glibc_min" 2>/dev/null; then
      echo "wheelhouse $house needs glibc $glibc_min or newer; this gateway has" \
        "glibc ${glibc_have:-(none found)}" >&2
      exit 1
    fi
  fi
  echo "using wheelhouse $house (this gateway: $want)"
  # pip's own answer, offline, with this interpreter, in a throw-away venv: a wheel missing
  # from a house without an INCOMPLETE file (a partial copy) is refused here, not after the
  # user, the venv and the files exist
  probe="$(mktemp -d)"
  trap 'rm -rf "$probe"' EXIT
  if ! resolved="$("$python" -m venv "$probe/venv" 2>&1 && pip_clean "$probe/venv/bin/python" \
      -m pip install --dry-run --no-index --find-links "$house" edge 2>&1)"; then
    echo "wheelhouse $house does not install offline with $python:" >&2
    printf '%s\n' "$resolved" | tail -n 6 >&2
    echo "rebuild it with 'make wheels' and copy it whole (docs/platforms.md)" >&2
    exit 1
  fi
  rm -rf "$probe"
  trap - EXIT
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
# the unit's Group= is the group the files are chowned to: the user's real primary group
# (a user made without --user-group has another one), NAME only for a staged user not here
group="$user"
if id "$user" >/dev/null 2>&1; then group="$(id -gn "$user")"; fi
if ! [[ "$group" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]]; then
  echo "the primary group of $user ($group) is not a plain group name; refusing" >&2
  exit 1
fi
as_user() { runuser -u "$user" -- "$@"; }
if [ "$own" = 1 ] && ! as_user "$real_python" -c pass >/dev/null 2>&1; then
  python_refused "cannot run it"
fi

# 2. the program in its own venv, and `edge` on the PATH
install -d -m 0755 "$prefix"
"$python" -m venv "$prefix/venv"
if [ -n "$wheels" ]; then
  pip_clean "$prefix/venv/bin/python" -m pip install --no-index --find-links "$wheels" edge
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
  echo "installed $etc/devices.yaml: edit gateway, uplink, buses and devices, then run 'edge check'"
fi
if [ ! -e "$etc/keys/gateway.key" ]; then
  "$prefix/venv/bin/python" - "$etc/keys/gateway.key" <<'PY'
import sys
from pathlib import Path
from edge.security.keys import describe, init_key
key = init_key(Path(sys.argv[1]))
print("gateway key created; register with the platform:", describe(key))
PY
fi
if [ "$own" = 1 ]; then
  chown -R "root:$group" "$etc"
  chown "$user:$group" "$etc/keys" "$etc/keys/gateway.key" "$state"
fi

# 4. the unit (its User= follows --user, its Group= that user's primary group)
install -d -m 0755 "$unit_dir"
sed -e "s/^User=edge$/User=$user/" -e "s/^Group=edge$/Group=$group/" \
  "$here/systemd/edge.service" > "$unit_dir/edge.service"
chmod 0644 "$unit_dir/edge.service"
# the service user runs what was installed: `edge --version` as that user, at the paths the
# unit uses (a staged tree is bind-mounted at /opt/edge in a private mount namespace)
if [ "$own" = 1 ]; then
  if [ -z "$DESTDIR" ]; then
    ran="$(as_user "$prefix/venv/bin/edge" --version 2>&1)" || ran_rc=$?
  elif [ -d /opt/edge ] && command -v unshare >/dev/null; then
    ran="$(unshare --mount --propagation private sh -c 'mount --bind "$1" /opt/edge &&
      exec runuser -u "$2" -- /opt/edge/venv/bin/edge --version' sh "$prefix" "$user" 2>&1)" ||
      ran_rc=$?
  else
    ran="not checked (staged, no /opt/edge mount point here)" ran_rc=0
  fi
  if [ "${ran_rc:-0}" != 0 ]; then
    echo "the service user $user cannot run edge: $ran" >&2
    echo "(interpreter $real_python; reinstall with --python /usr/bin/python3)" >&2
    exit 1
  fi
  echo "edge runs as $user: $ran"
fi
# 5. started only once the service user is known to run it
if [ -z "$DESTDIR" ] && [ "$start" = 1 ]; then
  systemctl daemon-reload
  systemctl enable --now edge.service
  systemctl --no-pager status edge.service || true
fi
cat <<EOT
done. Next (--config: a devices.yaml in the current folder, e.g. this clone's demo, comes first):
  edge keys show --config /etc/edge/devices.yaml   # the kid and public key the platform registers
  edge check --config /etc/edge/devices.yaml       # ${DESTDIR:+(here: $etc/devices.yaml) }fix until every line is ✔
EOT
if [ "$start" = 0 ]; then
  echo "  systemctl enable --now edge     # not started (--no-start)"
fi
