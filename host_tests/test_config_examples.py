"""Board example configs, the firmware's config loader and the deploy safety steps.

Every board with a board.json carries config.example.json; it is checked here with
the loader the firmware itself runs (firmware/main.py load_config, on CPython with
the machine/network stand-ins). Unknown keys are refused by name, CHANGE-ME
placeholders are refused by the board and by `tools/deploy flash`, profile 3
demands the certificate and key (and copies them), profile 0 gets a lab warning,
and safe mode (/SAFE_MODE or safe_mode_pin low) keeps main.py from starting the agent.
"""

import importlib.util
import json
import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "tools", "deploy")


def firmware_main():
    stand_ins = os.path.join(ROOT, "boards", "host", "cpython")
    if stand_ins not in sys.path:
        sys.path.insert(0, stand_ins)
    spec = importlib.util.spec_from_file_location("_fw_main_cfgtest",
                                                  os.path.join(ROOT, "firmware", "main.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def boards():
    base = os.path.join(ROOT, "boards")
    return sorted(n for n in os.listdir(base) if os.path.isfile(os.path.join(base, n, "board.json")))


def example(board):
    return os.path.join(ROOT, "boards", board, "config.example.json")


def filled(board):
    """The example with its placeholders replaced, as an installer would."""
    with open(example(board)) as f:
        cfg = json.load(f)
    cfg["wifi"] = {"ssid": "lab-wlan", "password": "wlan-secret"}
    if "password" in cfg:
        cfg["password"] = "sixteen-or-more-chars"
    return cfg


def write(tmp_path, cfg, name="my-config.json"):
    p = tmp_path / name
    p.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return str(p)


def deploy(*args):
    return subprocess.run([sys.executable, DEPLOY] + list(args), capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


@pytest.mark.parametrize("board", boards())
def test_every_board_has_an_example_the_firmware_loads(board):
    fw = firmware_main()
    assert os.path.isfile(example(board)), "boards/%s has no config.example.json" % board
    cfg = fw.load_config(example(board), allow_placeholders=True)
    assert cfg["csms_url"].startswith("wss://") and cfg["security_profile"] == 2
    # the example deploys as it is only once its placeholders are gone
    with pytest.raises(fw.ConfigError) as ei:
        fw.load_config(example(board))
    assert "wifi.ssid" in str(ei.value) and "CHANGE-ME" in str(ei.value)
    with open(example(board)) as f:
        text = f.read()
    assert "lab only" in text  # the hint for profile 0


def test_unknown_and_renamed_keys_are_refused_by_name(tmp_path):
    fw = firmware_main()
    good = filled("esp32_devkitc")
    assert fw.load_config(write(tmp_path, good))["station_id"] == "CP-0001"
    cases = [
        (dict(good, csms_ulr="wss://x/ocpp"), "unknown key 'csms_ulr'"),
        (dict(good, wifi={"ssid": "a", "passwrod": "b"}), "unknown key wifi.passwrod"),
        (dict(good, board="board"), '"board" is now "board_module"'),
        (dict(good, safe_mode_pin=40), "safe_mode_pin"),
        (dict(good, safe_mode_pin=True), "safe_mode_pin"),
        (dict(good, serial="CHANGE-ME"), "serial still holds the placeholder"),
    ]
    for cfg, words in cases:
        with pytest.raises(fw.ConfigError) as ei:
            fw.load_config(write(tmp_path, cfg))
        assert words in str(ei.value), (cfg, str(ei.value))
    # "_..." keys are comments
    assert fw.load_config(write(tmp_path, dict(good, _note="CHANGE-ME later")))


def test_flash_dry_run_refuses_placeholders(tmp_path):
    r = deploy("flash", "--port", "/dev/ttyUSB0", "--config", example("esp32_devkitc"),
               "--no-build", "--dry-run")
    assert r.returncode == 2 and "placeholder CHANGE-ME" in r.stderr, r.stderr
    assert "mpremote" not in r.stdout


def test_flash_profile3_demands_and_copies_certificate_and_key(tmp_path):
    cfg = filled("esp32_devkitc")
    del cfg["password"]
    cfg.update(security_profile=3, cert_file="/station.pem", key_file="/station.key")
    path = write(tmp_path, cfg)
    r = deploy("flash", "--port", "/dev/ttyUSB0", "--config", path, "--no-build", "--dry-run")
    assert r.returncode == 2 and "--cert" in r.stderr and "/station.pem" in r.stderr, r.stderr
    cert = tmp_path / "st.pem"
    key = tmp_path / "st.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    out = tmp_path / "dist"
    assert deploy("build", "--out", str(out)).returncode == 0
    r = deploy("flash", "--port", "/dev/ttyUSB0", "--config", path, "--cert", str(cert), "--key",
               str(key), "--bundle", str(out), "--no-build", "--dry-run")
    assert r.returncode == 0, r.stderr
    argv = shlex.split(r.stdout)
    assert ["cp", str(cert), ":station.pem"] == argv[argv.index(str(cert)) - 1:argv.index(str(cert)) + 2]
    assert ["cp", str(key), ":station.key"] == argv[argv.index(str(key)) - 1:argv.index(str(key)) + 2]
    r = deploy("flash", "--port", "/dev/ttyUSB0", "--config", path, "--certs-on-board",
               "--bundle", str(out), "--no-build", "--dry-run")
    assert r.returncode == 0 and str(cert) not in r.stdout


def test_flash_profile0_warns_lab_only(tmp_path):
    cfg = filled("esp32_devkitc")
    del cfg["password"]
    del cfg["ca_file"]
    cfg.update(security_profile=0, csms_url="ws://192.168.1.10:9000/ocpp")
    r = deploy("flash", "--port", "/dev/ttyUSB0", "--config", write(tmp_path, cfg),
               "--no-build", "--bundle", os.path.join(ROOT, "no-such-bundle"), "--dry-run")
    assert "lab only" in r.stderr, r.stderr


def test_safe_mode_flag_or_pin_keeps_the_agent_off(tmp_path, monkeypatch):
    fw = firmware_main()
    import machine

    started = []
    monkeypatch.setattr(fw, "main", lambda: started.append(1) or (_ for _ in ()).throw(
        KeyboardInterrupt()))
    flag = tmp_path / "SAFE_MODE"
    cfg = write(tmp_path, dict(filled("esp32_devkitc"), safe_mode_pin=0), "config.json")
    monkeypatch.setattr(fw, "SAFE_FLAG", str(flag))
    monkeypatch.setattr(fw, "_CONFIG", cfg)
    monkeypatch.setattr(fw.safe_mode, "__defaults__", (cfg, str(flag)))
    machine.Pin(0, machine.Pin.IN).value(1)  # released (pulled up)
    assert fw.safe_mode() is None
    fw._safe_main()
    assert started == [1]  # no flag, pin high: the agent starts
    flag.write_text("")
    assert "SAFE_MODE present" in fw.safe_mode()
    fw._safe_main()
    assert started == [1]
    flag.unlink()
    machine.Pin(0, machine.Pin.IN).value(0)  # BOOT button held
    assert fw.safe_mode() == "GPIO 0 held low"
    fw._safe_main()
    assert started == [1]
