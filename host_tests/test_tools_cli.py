"""Every tool in tools/ runs from a fresh clone as `tools/NAME` or `python3 tools/NAME`,
without activating the venv, and its --help shows defaults and an example.

Started by a Python outside .venv, a tool re-executes itself under .venv/bin/python;
with no usable venv it says "run `make venv` first" instead of a ModuleNotFoundError."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tools/bench, tools/build.py and tools/test_all.py belong to another change (branch twin)
TOOLS = ["agent", "csms", "composite", "deploy", "figures", "fuzz", "timeline", "run_demo.py",
         "gen_schemas.py"]
OUTSIDE = os.path.join(sys.base_prefix, "bin", "python3")


def run(cmd, env=None):
    e = dict(os.environ)
    e.pop("VIRTUAL_ENV", None)
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, cwd="/", env=e, timeout=120)


@pytest.mark.parametrize("tool", TOOLS)
def test_help_from_outside_the_venv_shows_defaults_and_an_example(tool):
    assert os.path.realpath(sys.base_prefix) != os.path.realpath(os.path.join(ROOT, ".venv"))
    for cmd in ([OUTSIDE, os.path.join(ROOT, "tools", tool), "--help"],
                [os.path.join(ROOT, "tools", tool), "--help"]):
        if cmd[0] != OUTSIDE and not os.access(cmd[0], os.X_OK):
            continue  # run_demo.py / gen_schemas.py: python3 tools/NAME is their form
        if tool == "deploy":
            cmd = cmd[:-1] + ["flash", "--help"]  # the options are per subcommand
        r = run(cmd)
        assert r.returncode == 0, (cmd, r.stderr)
        assert "example:" in r.stdout, r.stdout
        assert "default" in r.stdout, r.stdout


@pytest.mark.parametrize("tool", ["csms", "run_demo.py"])
def test_without_a_venv_the_tool_says_make_venv(tool):
    # -S: no site-packages, so ocpp/websockets are surely missing; CHARGEPILOT_NO_VENV keeps
    # the tool from finding .venv (as on a fresh clone before `make venv`)
    r = run([OUTSIDE, "-S", os.path.join(ROOT, "tools", tool), "--help"],
            {"CHARGEPILOT_NO_VENV": "1"})
    assert r.returncode != 0
    assert "run `make venv` first" in r.stderr and "ocpp" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_deploy_finds_the_venvs_mpremote_without_activation():
    r = run([OUTSIDE, os.path.join(ROOT, "tools", "deploy"), "log", "--port", "/dev/null-port",
             "--dry-run"])
    assert r.returncode == 0 and r.stdout.startswith("mpremote connect /dev/null-port"), r.stderr
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import venvcheck

    exe = venvcheck.venv_bin("mpremote")
    assert os.path.isabs(exe) and os.access(exe, os.X_OK), exe


def test_build_removes_mpy_files_no_source_gives_any_more(tmp_path):
    """A module moved to a sub-package left its old .mpy in the output tree, and
    the ROMFS image carried both copies (twice the size, the agent out of heap)."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import build

    out = tmp_path / "mpy"
    stale = out / "lib" / "chargepilot" / "moved_away.mpy"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"M\x06")
    gone_dir = out / "lib" / "chargepilot" / "oldpkg"
    gone_dir.mkdir()
    (gone_dir / "x.mpy").write_bytes(b"M\x06")
    count, errors = build.compile_all(str(out))
    assert count > 40 and not errors, errors
    assert not stale.exists() and not gone_dir.exists()
    made = sorted(str(p.relative_to(out)) for p in out.rglob("*.mpy"))
    assert len(made) == count  # one .mpy per device file, nothing else
