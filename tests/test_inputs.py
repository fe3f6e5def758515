"""Inputs nobody else's tests cover (docs/inputs.md): CLI arguments, environment variables, the
devices.yaml file itself, secret, key and certificate files, and the stored light schedule.
Each bad input gets a clear error (or is ignored with a warning), never a traceback or a hang."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import json
import logging
import os
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import clock as clock_mod
from edge.buffer.device_state import DeviceStateStore
from edge.cli import build_parser, main
from edge.config import TlsConfig
from edge.drivers.streetlight import SCHEDULE_FILE_MAX_BYTES, StreetlightDriver
from edge.errors import ConfigError, EdgeError, KeyFileError, LinkTLSError, SecretError
from edge.kinds.streetlight import LightStep, StreetlightDevice
from edge.ops.status_file import read_status
from edge.ops.systemd import notify, watchdog_interval_s
from edge.security.keys import init_key, load_key
from edge.security.secrets import read_secret
from edge.transports.modbus import ModbusBus
from edge.transports.tls import client_context
from edge.uplink.https import RETRY_AFTER_CAP_S as CAP_S
from edge.uplink.https import _retry_after
from tests.cfg import lamp_device, write_config
from tests.outbox_util import ev, open_store


def cli(argv: list[str]) -> int:
    """Run ``edge`` in-process; an argparse refusal is its SystemExit code."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


# ---- CLI arguments ----------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "says"), [
    (["run", "--log-level", "BOGUS"], "--log-level"),  # was a ValueError traceback
    (["run", "--boot-delay-s", "inf"], "--boot-delay-s"),  # the uplink never started
    (["run", "--boot-delay-s", "1e400"], "--boot-delay-s"),
    (["run", "--boot-delay-s", "nan"], "--boot-delay-s"),
    (["run", "--boot-delay-s", "-1"], "--boot-delay-s"),
    (["run", "--boot-delay-s", "abc"], "--boot-delay-s"),
    (["bogus"], "invalid choice"),
    (["keys", "destroy"], "invalid choice"),
    (["outbox", "drop-table"], "invalid choice"),
])
def test_a_bad_argument_is_a_usage_error(argv: list[str], says: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # a config that does not exist: should the argument pass, run stops at once with 78
    assert cli([*argv, "--config", str(tmp_path / "none.yaml")]) == 2
    assert says in capsys.readouterr().err


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    assert cli(["run", "--log-level", "debug", "--config", str(tmp_path / "none.yaml")]) == 78


def test_probe_of_an_unknown_device_names_the_known_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[],
                          devices=[])
    assert cli(["probe", "ghost", "--config", str(loaded.path)]) == 2
    assert "no device 'ghost'" in capsys.readouterr().err


# ---- the devices.yaml file itself (content errors: tests/test_config.py) ----------------------

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi",
                                                                 strict=True))


@pytest.mark.parametrize(("content", "says"), [
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"", "must be a mapping"),
    (b"- a list\n", "must be a mapping"),
    (b"gateway: [unclosed\n", "devices.yaml:"),
    (b"a: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "nested too deeply"),  # was RecursionError
    (BILLION_LAUGHS.encode(), "aliases"),  # 9^9 nodes once expanded: was a hang
    (b"a: &a [*a]\n", "devices.yaml:1"),  # refers to itself: no cycle, no hang
])
def test_a_bad_config_file_is_one_clear_error(content: bytes, says: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "devices.yaml"
    path.write_bytes(content)
    assert cli(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert says in err, err
    assert len(err) < 2000


def test_a_missing_or_unreadable_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["check", "--config", str(tmp_path)]) == 2  # a directory
    assert "cannot read" in capsys.readouterr().err
    assert cli(["run", "--config", str(tmp_path / "none.yaml")]) == 78
    monkeypatch.setenv("EDGE_CONFIG", str(tmp_path / "from-env.yaml"))
    assert cli(["check"]) == 2
    assert "from-env.yaml: cannot read" in capsys.readouterr().err
    assert cli(["run"]) == 78  # docs/inputs.md's EDGE_CONFIG row (f14 #4)
    assert "from-env.yaml" in capsys.readouterr().err


# ---- environment variables --------------------------------------------------------------------

@pytest.mark.parametrize(("usec", "pid"), [
    ("abc", None), ("", None), ("-5000000", None), ("0", None), ("1e6", None),
    ("5000000", "abc"), ("5000000", "1"),  # another process's watchdog
])
def test_a_malformed_or_foreign_watchdog_setting_is_ignored(
        usec: str, pid: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert watchdog_interval_s() is None


def test_a_good_watchdog_setting_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "5000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 5.0


@pytest.mark.parametrize("address", [
    "/nonexistent/notify", "@", "relative-name", "/" + "x" * 200, "@" + "y" * 200])
def test_a_bad_notify_socket_is_a_warning(address: str, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert notify("READY=1") is False
    assert "sd_notify failed" in caplog.text


def test_a_notify_socket_that_is_a_stream_socket_is_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "stream.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1") is False


# ---- secret, key and certificate files --------------------------------------------------------

SECRET = "correct horse battery staple"


def write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(("data", "mode", "says"), [
    (SECRET.encode(), 0o644, "mode 0644"),
    (b"changeme\n", 0o600, "placeholder"),
    (b"   \n", 0o600, "placeholder"),
    (b"short", 0o600, "shorter than"),
    (b"\xff\xfe" + SECRET.encode(), 0o600, "not UTF-8"),  # was a UnicodeDecodeError traceback
])
def test_a_bad_secret_file_is_refused_without_echoing_it(data: bytes, mode: int, says: str,
                                                        tmp_path: Path) -> None:
    path = write(tmp_path / "page.pw", data, mode)
    with pytest.raises(SecretError, match=says) as info:
        read_secret(path, "status page password")
    assert info.value.code == "secret.invalid"
    assert "status page password" in str(info.value)
    assert SECRET not in str(info.value)


def test_a_missing_secret_file_or_a_directory_is_refused(tmp_path: Path) -> None:
    for path in (tmp_path / "none.pw", tmp_path):
        with pytest.raises(SecretError, match="cannot read"):
            read_secret(path, "southbound password")


def _ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


@pytest.mark.parametrize(("data", "says"), [
    (b"", "not a PEM"),
    (b"\xff\xfe\x00\x01", "not a PEM"),
    (b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n", "not"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not an Ed25519"),
    (None, "not an Ed25519"),  # an EC key where the Ed25519 one belongs
])
def test_a_bad_gateway_key_file_is_refused(data: bytes | None, says: str,
                                           tmp_path: Path) -> None:
    path = write(tmp_path / "gateway.key", _ec_pem() if data is None else data)
    with pytest.raises(KeyFileError, match=says):
        load_key(path)


def test_a_gateway_key_readable_by_others_or_missing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.key"
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key(path)
    init_key(path)
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="0640"):
        load_key(path)


@pytest.mark.parametrize("field", ["ca_file", "cert_file"])
@pytest.mark.parametrize("data", [b"", b"garbage\n", b"\xff\xfe\x00", None])
def test_an_unusable_tls_file_is_a_link_tls_error(field: str, data: bytes | None,
                                                   tmp_path: Path) -> None:
    path = tmp_path / "file.pem"
    if data is not None:
        write(path, data)  # None: the file is missing
    files = {"ca_file": str(path)} if field == "ca_file" else \
        {"cert_file": str(path), "key_file": str(path)}
    with pytest.raises(LinkTLSError, match="TLS files unusable"):
        client_context(TlsConfig(**files))


# ---- the stored light schedule (state_dir/schedules/<lamp>.json) ------------------------------

@functools.cache
def _schedule_driver(folder: Path) -> StreetlightDriver:
    """A lamp whose devices.yaml schedule is one sunset+15 step (made once per folder)."""
    loaded = write_config(folder, broker_port=1, pki=None, buses=[
        {"name": "b", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1}], devices=[
        lamp_device("lamp-1", "b", 1, schedule=[{"at": "sunset+15", "on": True}])])
    cfg = loaded.config.device("lamp-1")
    assert isinstance(cfg, StreetlightDevice)
    driver = StreetlightDriver(cfg, ModbusBus(loaded.config.bus("b")), timeout_s=1.0)
    (folder / "schedules").mkdir()
    driver.stored = DeviceStateStore(folder / "schedules", max_bytes=SCHEDULE_FILE_MAX_BYTES)
    return driver


@pytest.mark.parametrize("content", [
    b"not json", b"\xff\xfe{}", b"", b"[]", b'{"steps": 5}', b'{"steps": {"at": "18:00"}}',
    b'{"steps": [{"at": "25:99", "on": true}]}', b'{"steps": [{"at": "18:00", "on": "maybe"}]}',
    b"[" * 100_000 + b"]" * 100_000,  # was a RecursionError out of the driver, every restart
])
def test_a_corrupt_stored_schedule_falls_back_to_devices_yaml(
        content: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    driver = _schedule_driver(tmp_path)
    (tmp_path / "schedules" / "lamp-1.json").write_bytes(content)
    caplog.set_level(logging.WARNING)
    driver.load_schedule()
    assert [s.at for s in driver.schedule] == ["sunset+15"]
    assert "stored schedule" in caplog.text


def test_the_error_types_stay_in_the_hierarchy() -> None:
    # the CLI prints any EdgeError as one line: these must never escape as something else
    for cls in (SecretError, KeyFileError, LinkTLSError, ConfigError):
        assert issubclass(cls, EdgeError)


# ---- state files the agent wrote: the outbox seq reservation, status.json ---------------------

@pytest.mark.parametrize("content", [
    b"", b"garbage", b'{"reserved_upto": "x"}', b"[]", b"\xff\xfe",
    b'{"reserved_upto": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
])
def test_a_damaged_seq_reservation_never_reuses_a_seq(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    store = open_store(path)
    high = store.append([ev() for _ in range(5)]).seqs[-1]
    store.close()
    path.write_bytes(b"this is not a database" * 100)  # the store is lost ...
    path.with_name("o.db.seq").write_bytes(content)  # ... and its reservation damaged
    store = open_store(path)
    try:
        assert store.append([ev()]).seqs[0] > high
    finally:
        store.close()


@pytest.mark.parametrize("content", [
    b"", b"{", b"[]", b"null", b'{"written_at": "x"}', b'{"written_at": 1e400}',
    b'{"version": 1}', b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000,
])
def test_a_damaged_status_file_is_no_status_not_a_traceback(
        content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[])
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    (loaded.state_dir / "status.json").write_bytes(content)
    assert cli(["status", "--config", str(loaded.path)]) == 1
    assert "no status" in capsys.readouterr().err
    assert cli(["reload", "--config", str(loaded.path)]) == 1


# ---- HTTPS uplink: the platform's Retry-After header ------------------------------------------

@pytest.mark.parametrize(("header", "want"), [
    (None, None), ("30", 30.0), ("-5", 0.0), ("nan", None), ("NaN", None), ("inf", CAP_S),
    ("1e400", CAP_S), ("abc", None), ("Wed, 21 Oct 2026 07:28:00 GMT", None), ("", None)])
def test_a_hostile_retry_after_is_bounded(header: str | None, want: float | None) -> None:
    assert _retry_after(header) == want


# ---- the kernel's clock state and boot id ------------------------------------------------------

class _RefusingLibc:
    """adjtimex() as under ProtectClock=: refused (-1)."""

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        pass

    def adjtimex(self, _buf: object) -> int:
        return -1


def test_a_refused_adjtimex_falls_back_to_timesyncd_s_flag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.clock.ctypes.CDLL", _RefusingLibc)
    flag = tmp_path / "synchronized"
    assert str(clock_mod.TIMESYNCD_FLAG) == "/run/systemd/timesync/synchronized"
    monkeypatch.setattr("edge.clock.TIMESYNCD_FLAG", flag)
    assert clock_mod.kernel_clock_synced() is False
    flag.touch()
    assert clock_mod.kernel_clock_synced() is True


class _LibcWithoutAdjtimex:
    def __init__(self, *_args: object, **_kwargs: object) -> None:
        pass


def test_no_adjtimex_means_not_synced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.clock.ctypes.CDLL", _LibcWithoutAdjtimex)
    assert clock_mod.kernel_clock_synced() is False


def test_adjtimex_is_found_without_forking_ldconfig(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real libc answers (0..5 or TIME_ERROR) and nothing is spawned to find it."""
    import subprocess

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("kernel_clock_synced spawned a process")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    assert isinstance(clock_mod.kernel_clock_synced(), bool)


def test_an_unreadable_boot_id_is_unknown(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.clock.Path", lambda _text: tmp_path / "no-proc")
    assert clock_mod.boot_id() == "unknown"


@pytest.mark.parametrize("content", [
    b"", b"garbage", b"\xff\xfe", "١٢٣".encode(), b"-5", b"1e400", b"12 34", b"9" * 21,
    b"9" * (2 << 20), None])  # None: a directory where the file goes
def test_a_damaged_clock_floor_is_no_floor(content: bytes | None, tmp_path: Path) -> None:
    """state_dir/clock_floor (the last trusted wall time): a torn, foreign or oversized file
    reads as no floor, so the start goes on and GNSS time gets the build floor's window."""
    path = tmp_path / clock_mod.FLOOR_FILE
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert clock_mod.read_floor(path) is None


# ---- fuzzing the small parsers (10 k examples in make test, 100 k in make faults) --------------

# Not the protocol parsers (those run FUZZ_EXAMPLES): files the agent or the installer wrote,
# and arguments. A tenth of the examples keeps make test short (300; 10 k in make faults); the
# deadline is generous because these touch the disk on a shared CI box: a hang still fails.
FUZZ = settings(max_examples=max(100, int(os.environ.get("FUZZ_EXAMPLES", "3000")) // 10),
                deadline=dt.timedelta(seconds=5),
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=8)
JSONISH = st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()) | \
    st.fixed_dictionaries({"steps": st.lists(st.fixed_dictionaries(
        {"at": st.text(max_size=12), "on": JSON}), max_size=3)}).map(
        lambda v: json.dumps(v).encode())


@pytest.mark.reliability
@FUZZ
@given(argv=st.lists(st.sampled_from(["run", "check", "probe", "status", "keys", "outbox",
                                      "--log-level", "--boot-delay-s", "--json", "--force",
                                      "init", "show", "stats"]) | st.text(max_size=20),
                     max_size=5))
def test_fuzz_the_argument_parser(argv: list[str]) -> None:
    code: int | str | None = None
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            code = exc.code
    if code is not None:
        assert code in (0, 2)  # --help / --version, or a usage error: nothing else escapes
    else:
        assert callable(args.func)


@pytest.mark.reliability
@FUZZ
@given(content=JSONISH)
def test_fuzz_the_stored_schedule(content: bytes, tmp_path: Path) -> None:
    driver = _schedule_driver(tmp_path)
    (tmp_path / "schedules" / "lamp-1.json").write_bytes(content)
    driver.load_schedule()  # never raises
    assert all(isinstance(step, LightStep) for step in driver.schedule)


@pytest.mark.reliability
@FUZZ
@given(content=JSONISH)
def test_fuzz_the_status_file(content: bytes, tmp_path: Path) -> None:
    (tmp_path / "status.json").write_bytes(content)
    status = read_status(tmp_path)  # never raises
    assert status is None or isinstance(status["devices"], dict)


@pytest.mark.reliability
@FUZZ
@given(content=st.binary(max_size=200))
def test_fuzz_secret_and_key_files(content: bytes, tmp_path: Path) -> None:
    path = write(tmp_path / "file", content)
    with contextlib.suppress(SecretError):
        assert len(read_secret(path, "fuzz")) >= 12
    with contextlib.suppress(KeyFileError):
        load_key(path)


@pytest.mark.reliability
@FUZZ
@given(header=st.none() | st.text(max_size=40))
def test_fuzz_retry_after(header: str | None) -> None:
    value = _retry_after(header)
    assert value is None or 0.0 <= value <= CAP_S


# ---- devices.yaml: an MQTT device's topic ------------------------------------------------------

def _cover(topic: str) -> dict[str, object]:
    return {"name": "cover-9", "kind": "manhole_tilt", "transport": "mqtt",
            "model": "mqtt_json", "topic": topic,
            "asset": {"code": "3205080106000999", "class": "0106", "grid": "320508001002003",
                      "name": "井盖"}}


@pytest.mark.parametrize("topic", ["covers/#/9", "covers/9#", "covers/a+/9", "+x", ""])
def test_an_invalid_topic_is_a_config_error_with_its_line(topic: str, tmp_path: Path) -> None:
    # paho refuses these at subscribe time: the driver would restart forever past edge check
    with pytest.raises(ConfigError) as info:
        write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[_cover(topic)],
                     extra={"southbound_mqtt": {"host": "127.0.0.1", "port": 1883,
                                                "tls": False}})
    assert any("topic" in problem for problem in info.value.problems), info.value.problems


@pytest.mark.parametrize("topic", ["covers/9", "covers/+/report", "covers/#", "+", "#",
                                   "$share/g/covers/9", "a//b"])
def test_a_valid_topic_filter_loads(topic: str, tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[_cover(topic)],
                          extra={"southbound_mqtt": {"host": "127.0.0.1", "port": 1883,
                                                     "tls": False}})
    assert loaded.config.device("cover-9").topic == topic
