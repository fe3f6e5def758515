"""``python -m hil.receiver``: the standalone receiver's map config and TLS (issue 18 re-test).

Real peers: a mosquitto with the demo's TLS set-up (hil/broker.py, client certificates
required) and the receiver as its own process, read through its web port.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.broker import Mosquitto, free_port
from hil.demo import demo_main
from hil.pki import Pki, ensure_pki
from hil.receiver.__main__ import main as receiver_main
from hil.receiver.web import MapConfigError, load_map_config
from tests.helpers import wait_until_sync

LINE = [[31.30, 120.60], [31.301, 120.601]]


def _spawn(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    keys = tmp_path / "gateways.json"
    keys.write_text("{}")
    return subprocess.Popen(
        [sys.executable, "-m", "hil.receiver", "--keys", str(keys),
         "--store", str(tmp_path / "rx.db"), *args],
        stdout=subprocess.PIPE, stderr=(tmp_path / "rx.log").open("a"), text=True)


def _ready(proc: subprocess.Popen[str], timeout_s: float) -> bool:
    """Whether the receiver printed ``ready`` (subscribed) within ``timeout_s``."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return False
    return proc.stdout.readline().strip() == "ready"


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_the_standalone_receiver_serves_its_map_config(
        tmp_path: Path, plain_broker: Mosquitto, stopped: list[subprocess.Popen[str]]) -> None:
    config = tmp_path / "map.json"
    config.write_text(json.dumps({"tiles_url": "https://tiles.city.example/{z}/{x}/{y}.png",
                                  "roads": {"r1": {"line": LINE}},
                                  "grids": {"320508001002003": [*LINE, [31.3, 120.601]]}}))
    web = free_port()
    proc = _spawn(tmp_path, "--broker", f"127.0.0.1:{plain_broker.port}", "--web", str(web),
                  "--map-config", str(config))
    stopped.append(proc)
    assert _ready(proc, 30), (tmp_path / "rx.log").read_text()
    with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/map/config", timeout=5) as r:
        got = json.load(r)
    assert got["tiles_url"] == "https://tiles.city.example/{z}/{x}/{y}.png"
    assert got["roads"] == {"r1": {"line": LINE}}
    assert list(got["grids"]) == ["320508001002003"]


def test_a_bad_map_config_stops_the_receiver_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "map.json"
    config.write_text(json.dumps({"tile_url": "https://t.example/{z}/{x}/{y}.png"}))
    keys = tmp_path / "k.json"
    keys.write_text("{}")
    assert receiver_main(["--keys", str(keys), "--map-config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert str(config) in err and "'tile_url'" in err and "tiles_url" in err


@pytest.mark.parametrize(("doc", "words"), [
    ({"tile_url": "x"}, ["unknown key 'tile_url'", "allowed keys: tiles_url, "
                         "tiles_attribution, roads, grids"]),
    ({"roads": {"r1": {"line": LINE, "width": 3}}}, ["unknown key 'width' in roads.r1",
                                                     "allowed keys: line"]),
    ({"roads": {"r1": {"line": [[31.3, 120.6]]}}}, ["roads.r1.line:", "at least 2"]),
    ({"tiles_url": "https://t.example/tile.png"}, ["tiles_url must be an http(s) URL"]),
    ("{not json", ["not JSON"]),
])
def test_a_map_config_typo_is_one_line_naming_file_and_key(
        tmp_path: Path, doc: object, words: list[str]) -> None:
    path = tmp_path / "map.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(MapConfigError) as caught:
        load_map_config(path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    for word in words:
        assert word in text


def test_the_demo_refuses_a_map_config_typo_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parent.parent
    cfg = tmp_path / "devices.yaml"
    cfg.write_text((root / "devices.yaml").read_text())
    (tmp_path / "var" / "receiver").mkdir(parents=True)
    (tmp_path / "var" / "receiver" / "map.json").write_text('{"tile_url": null}')
    assert demo_main(cfg, self_test=True, seconds=1) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "map.json" in err and "'tile_url'" in err, err
    assert not (tmp_path / "var" / "demo").exists()  # refused before anything started


def test_the_demo_map_draws_the_work_roads_of_devices_yaml(tmp_path: Path) -> None:
    from edge.config_loader import load_config
    from hil.demo import demo_map_config

    root = Path(__file__).resolve().parent.parent
    text = (root / "devices.yaml").read_text()
    work = """
    work:
      shift: {start: "06:00", end: "14:00"}
      roads:
        - {id: renmin-rd, width_m: 12, line: [[31.3105, 120.6302], [31.3105, 120.6402]]}
        - {id: square, width_m: 3, polygon: [[31.30, 120.60], [31.3004, 120.60], [31.3004, 120.6006]]}
"""
    anchor = "      name: 环卫车 苏E-0003\n"
    assert anchor in text
    cfg = tmp_path / "devices.yaml"
    cfg.write_text(text.replace(anchor, anchor + work.lstrip("\n")))
    (tmp_path / "var" / "receiver").mkdir(parents=True)
    own = [[31.0, 120.0], [31.001, 120.0]]
    (tmp_path / "var" / "receiver" / "map.json").write_text(json.dumps(
        {"roads": {"renmin-rd": {"line": own}, "other": {"line": own}}}))
    config = demo_map_config(load_config(cfg))
    # the file's own centreline wins; a polygon area needs none (its cells travel in the event)
    assert config.roads == {"renmin-rd": {"line": own}, "other": {"line": own}}
    (tmp_path / "var" / "receiver" / "map.json").unlink()
    config = demo_map_config(load_config(cfg))
    assert config.roads == {"renmin-rd": {"line": [[31.3105, 120.6302], [31.3105, 120.6402]]}}


def test_the_standalone_receiver_connects_with_verified_tls(
        tmp_path: Path, broker: Mosquitto, pki: Pki,
        stopped: list[subprocess.Popen[str]]) -> None:
    proc = _spawn(tmp_path, "--broker", f"127.0.0.1:{broker.port}", "--ca", str(pki.cert("ca")),
                  "--cert", str(pki.cert("receiver")), "--key", str(pki.key("receiver")))
    stopped.append(proc)
    assert _ready(proc, 30), (tmp_path / "rx.log").read_text()


@pytest.mark.parametrize("how", ["plain", "foreign_ca"])
def test_the_standalone_receiver_never_falls_back_to_an_unverified_link(
        tmp_path: Path, broker: Mosquitto, pki: Pki, how: str,
        stopped: list[subprocess.Popen[str]]) -> None:
    if how == "plain":
        args = ["--broker", f"127.0.0.1:{broker.port}"]
    else:  # a broker whose certificate another CA signed is not the platform's broker
        other = ensure_pki(tmp_path / "other", clients=("receiver",))
        args = ["--broker", f"127.0.0.1:{broker.port}", "--ca", str(other.cert("ca")),
                "--cert", str(pki.cert("receiver")), "--key", str(pki.key("receiver"))]
    proc = _spawn(tmp_path, *args)
    stopped.append(proc)
    assert not _ready(proc, 4)
    # the refusal is logged, not only the absence of "ready": wait for its line (the log is
    # written by another process, so it may lag the 4 s above)
    refusal = "certificate refused" if how == "foreign_ca" else "receiver: "
    log = tmp_path / "rx.log"
    wait_until_sync(lambda: refusal in log.read_text(), 10, f"{refusal!r} in the receiver's log")


def test_cert_without_ca_is_refused(tmp_path: Path, pki: Pki) -> None:
    keys = tmp_path / "k.json"
    keys.write_text("{}")
    with pytest.raises(SystemExit) as caught:
        receiver_main(["--keys", str(keys), "--cert", str(pki.cert("receiver")),
                       "--key", str(pki.key("receiver"))])
    assert caught.value.code == 2


def test_plain_mqtt_is_only_for_a_broker_on_this_machine(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "k.json"
    keys.write_text("{}")
    with pytest.raises(SystemExit) as caught:
        receiver_main(["--keys", str(keys), "--broker", "mqtt.city.example:1883"])
    assert caught.value.code == 2
    assert "give --ca" in capsys.readouterr().err
