# edge — make demo | make test | make faults | make bench | make lint | make wheels
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: demo test faults bench lint wheels armv7l-wheels system-deps test-deps clean

# Debian packages: the demo needs mosquitto (a real broker) and venv support; the tests also
# need a C compiler (the power-loss simulation shim), chromium (pages are tested in it) with a
# small CJK font (asset names in the map's screenshots; docs/decisions.md D55),
# systemd-analyze (the sandbox score), faketime (a gateway booting at 1970, R19), Node.js and
# npm (the contract's second-language consumer, tests/contract: `npm ci` by its test fixture) and the
# PostgreSQL server (the receiver's PG store; tests start a private instance of it).
system-deps:
	@need=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need="$$need mosquitto"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || need="$$need python3-venv"; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$need; \
	fi

test-deps: system-deps
	@need=""; \
	command -v cc >/dev/null || need="$$need gcc libc6-dev"; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	command -v systemd-analyze >/dev/null || need="$$need systemd"; \
	command -v faketime >/dev/null || need="$$need faketime"; \
	command -v node >/dev/null && command -v npm >/dev/null || need="$$need nodejs npm"; \
	fc-list 2>/dev/null | grep -qi "WenQuanYi Micro Hei" || need="$$need fonts-wqy-microhei"; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || need="$$need postgresql"; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$need; \
	fi

$(STAMP): pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: system-deps $(STAMP)
	$(PY) -m hil demo

test: test-deps $(STAMP)
	$(PY) -m pytest -m "not faults" -q

faults: test-deps $(STAMP)
	FUZZ_EXAMPLES=100000 $(PY) -m pytest -m "faults or reliability" -q -p no:randomly

bench: system-deps $(STAMP)
	$(PY) -m bench all

lint: $(STAMP)
	$(VENV)/bin/ruff check edge hil bench tests
	$(VENV)/bin/mypy

# Offline wheelhouses for gateways without internet (no run-time pip installs, ever): one per
# CPython 3.11/3.12/3.13 x x86_64/aarch64/armv7l in wheels/cpXY-ARCH/, each checked to resolve
# with --no-index; stops with the list of wheels the index lacks and, per house, what to do
# (docs/platforms.md). Wheels built once elsewhere are taken from wheels/local/: cffi and
# PyNaCl for cp311/cp313-armv7l from `make armv7l-wheels`; cffi for cp312-armv7l only from an
# Ubuntu 24.04 armhf device (no Debian armhf Python 3.12 exists to script it).
WHEEL_TARGETS ?= cp311-x86_64,cp311-aarch64,cp311-armv7l,cp312-x86_64,cp312-aarch64,cp312-armv7l,cp313-x86_64,cp313-aarch64,cp313-armv7l
wheels: $(STAMP)
	$(PY) tools/wheelhouse.py --out wheels --find-links wheels/local --jobs 3 --targets $(WHEEL_TARGETS)
	@echo "copy wheels/ (or one wheels/cpXY-ARCH/) to the gateway: systemd/install.sh --wheels DIR"

# Once, on a connected amd64 Debian machine as root: build the armv7l wheels PyPI does not
# have (cffi for 3.11 and 3.13, PyNaCl abi3 for all three) in Debian armhf roots under
# qemu-user (docs/platforms.md); cffi for 3.12 it cannot build (no Debian armhf 3.12).
armv7l-wheels:
	tools/armv7l-wheels.sh wheels/local

clean:
	rm -rf $(VENV) var build dist *.egg-info
