"""tools/deploy: the .mpy bundle, the mpremote command lines, package.json, manifest.py.

No board can be attached in CI, so the flash test runs mpremote's own code
(argument parsing, `cp -r`, `exec`) against an emulated board: a MicroPython
unix-port process whose working directory is the board's filesystem and which
executes what mpremote sends, like the raw REPL does. Then the agent is
imported from that filesystem, with the board's sys.path.
"""

import importlib.machinery
import importlib.util
import json
import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
MICROPYTHON = os.path.join(BIN, "micropython")
DEPLOY = os.path.join(ROOT, "tools", "deploy")


def _load_deploy():
    loader = importlib.machinery.SourceFileLoader("chargepilot_deploy", DEPLOY)
    spec = importlib.util.spec_from_loader("chargepilot_deploy", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


deploy = _load_deploy()


def run_tool(*args, check=True):
    r = subprocess.run([sys.executable, DEPLOY] + list(args), capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    if check and r.returncode != 0:
        pytest.fail("tools/deploy %s failed (%d):\n%s%s" % (" ".join(args), r.returncode,
                                                            r.stdout, r.stderr))
    return r


def lib_sources():
    """Module paths (chargepilot/x, chargepilot/ocppj/schemas/y) of every .py in lib/chargepilot."""
    out = set()
    base = os.path.join(ROOT, "lib")
    for dirpath, _, names in os.walk(os.path.join(base, "chargepilot")):
        for n in names:
            if n.endswith(".py"):
                out.add(os.path.relpath(os.path.join(dirpath, n), base)[:-3].replace(os.sep, "/"))
    return out


def module_names(paths):
    names = []
    for p in sorted(paths):
        name = p.replace("/", ".")
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        names.append(name)
    return names


def files_under(top):
    out = {}
    for dirpath, _, names in os.walk(top):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, top).replace(os.sep, "/")] = f.read()
    return out


def import_on_unix_port(path, modules, cwd):
    """Import `modules` on the unix port with MICROPYPATH=path; {module: __file__}."""
    code = ("import sys\n"
            "for n in %r:\n"
            "    __import__(n)\n"
            "    print('LOADED', n, sys.modules[n].__file__)\n" % (modules,))
    env = dict(os.environ, MICROPYPATH=path)
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=2M", "-c", code], capture_output=True,
                       text=True, env=env, cwd=cwd, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    loaded = {}
    for line in r.stdout.splitlines():
        if line.startswith("LOADED "):
            _, name, file = line.split(" ", 2)
            loaded[name] = file
    return loaded


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bundle") / "dist")
    r = run_tool("build", "--out", out)
    return out, r.stdout


@pytest.fixture(scope="module")
def stamp(bundle):
    with open(os.path.join(bundle[0], "BUNDLE.json")) as f:
        return json.load(f)


# ---- build ------------------------------------------------------------------

def test_bundle_layout_is_the_boards_filesystem(bundle, stamp):
    out, _ = bundle
    files = files_under(out)
    lib = {p[:-4] for p in files if p.startswith("lib/")}
    assert {"lib/" + m for m in lib_sources()} == lib
    assert all(p.endswith(".mpy") for p in files if p.startswith("lib/"))
    # boot.py and main.py stay source, byte for byte
    for name in ("boot.py", "main.py"):
        with open(os.path.join(ROOT, "firmware", name), "rb") as f:
            assert files[name] == f.read()
    with open(os.path.join(ROOT, "boards", "esp32_devkitc", "board.json"), "rb") as f:
        assert files["board.json"] == f.read()
    roots = sorted(p for p in files if "/" not in p)
    assert roots == ["BUNDLE.json", "board.json", "board.mpy", "boot.py",
                     "config.template.json", "main.py"]
    # BUNDLE.json describes exactly what goes to the board
    listed = {f["path"]: f["size"] for f in stamp["files"]}
    assert set(listed) == set(files) - {"BUNDLE.json", "config.template.json"}
    assert all(listed[p] == len(files[p]) for p in listed)
    assert stamp["size"] == sum(listed.values())
    assert stamp["board"] == "esp32_devkitc" and stamp["native_files"] == 0


def test_build_prints_the_bundle_size(bundle, stamp):
    _, stdout = bundle
    assert "%d files, %d bytes" % (len(stamp["files"]), stamp["size"]) in stdout
    assert "portable bytecode" in stdout
    assert 20_000 < stamp["size"] < 1_000_000  # sanity: real code, fits ESP32 flash


def test_every_mpy_is_portable_bytecode_of_mpy_v6(bundle):
    out, _ = bundle
    mpys = [p for p in files_under(out) if p.endswith(".mpy")]
    assert len(mpys) > 20
    for p in mpys:
        ver, sub, arch = deploy.mpy_header(os.path.join(out, p))
        assert (ver, sub, arch) == (6, 0, 0), p


def test_every_mpy_loads_on_the_unix_port(bundle, tmp_path):
    out, _ = bundle
    lib_mods = module_names(lib_sources())
    # only the bundle is on the path (cwd is empty): no source can stand in for an .mpy
    path = ".frozen:" + os.path.join(out, "lib") + ":" + out
    loaded = import_on_unix_port(path, lib_mods + ["board"], str(tmp_path))
    assert sorted(loaded) == sorted(lib_mods + ["board"])
    for name, file in loaded.items():
        assert file.endswith(".mpy"), (name, file)
        assert file.startswith(out), (name, file)


def test_board_module_loads_but_needs_the_esp32_machine(bundle, tmp_path):
    # board.mpy imports on the unix port (its `machine` exists, without Pin/PWM/ADC);
    # driving pins is the ESP32's business: load() must fail cleanly here, not import.
    out, _ = bundle
    code = ("import board\n"
            "try:\n"
            "    board.load('%s/board.json')\n"
            "    print('LOADED-BOARD')\n"
            "except Exception as e:\n"
            "    print('NO-HARDWARE', type(e).__name__)\n" % out)
    env = dict(os.environ, MICROPYPATH=".frozen:%s/lib:%s" % (out, out))
    r = subprocess.run([MICROPYTHON, "-c", code], capture_output=True, text=True, env=env,
                       cwd=str(tmp_path), timeout=30)
    assert r.returncode == 0, r.stderr
    assert "NO-HARDWARE" in r.stdout


def test_march_is_accepted_and_bytecode_stays_portable(tmp_path):
    out = str(tmp_path / "x")
    r = run_tool("build", "--out", out, "--march", "xtensawin")
    assert "portable bytecode" in r.stdout
    ver, sub, arch = deploy.mpy_header(os.path.join(out, "lib", "chargepilot", "output", "pilot.mpy"))
    assert (ver, arch) == (6, 0)  # no native code, so no arch in the header
    bad = run_tool("build", "--out", str(tmp_path / "y"), "--march", "z80", check=False)
    assert bad.returncode == 2 and "unknown --march" in bad.stderr


def test_build_refuses_to_wipe_a_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    r = run_tool("build", "--out", str(tmp_path), check=False)
    assert r.returncode == 2 and "refusing" in r.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_config_template_passes_the_firmwares_own_check(bundle):
    out, _ = bundle
    path = os.path.join(out, "config.template.json")
    cfg = deploy.check_config(path, allow_placeholders=True)
    with open(os.path.join(ROOT, "firmware", "main.py")) as f:
        documented = f.read()
    for key in cfg:
        if not key.startswith("_"):  # "_..." keys are comments
            assert '"%s"' % key in documented, key  # every template key is one main.py reads
    assert cfg["security_profile"] == 2 and cfg["csms_url"].startswith("wss://")


# ---- flash / log command lines ---------------------------------------------

GOOD_CONFIG = {"wifi": {"ssid": "lab"}, "csms_url": "wss://csms.test/ocpp",
               "station_id": "CP-7", "password": "sixteen-chars-pw!", "ca_file": "csms_ca.pem"}


def write_config(tmp_path, cfg):
    p = tmp_path / "my-config.json"
    p.write_text(json.dumps(cfg))
    return str(p)


def test_dry_run_flash_prints_the_mpremote_command(bundle, stamp, tmp_path):
    out, _ = bundle
    cfg = write_config(tmp_path, GOOD_CONFIG)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    r = run_tool("flash", "--port", "/dev/ttyUSB0", "--config", cfg, "--ca", str(ca),
                 "--bundle", out, "--no-build", "--dry-run")
    assert r.stdout.startswith("mpremote connect ")
    # two commands: safe mode on + reset, then the copy (each command's exec code
    # spans lines, so split on the start of the second command)
    cut = r.stdout.index("\nmpremote connect ")
    first, second = r.stdout[:cut], r.stdout[cut + 1:]
    assert shlex.split(first) == ["mpremote", "connect", "/dev/ttyUSB0", "exec",
                                  deploy.safe_mode_steps()[0][1], "+", "reset"]
    argv = shlex.split(second)
    assert argv[:3] == ["mpremote", "connect", "/dev/ttyUSB0"]
    steps = []
    cur = []
    for a in argv[3:]:
        if a == "+":
            steps.append(cur)
            cur = []
        else:
            cur.append(a)
    steps.append(cur)
    j = lambda p: os.path.join(out, p)  # noqa: E731
    assert steps[0][0] == "exec" and 'os.mkdir("lib")' in steps[0][1]
    assert steps[1:9] == [
        ["cp", "-r", j("lib/chargepilot"), ":lib"],
        ["cp", j("board.mpy"), ":board.mpy"],
        ["cp", j("board.json"), ":board.json"],
        ["cp", cfg, ":config.json"],
        ["cp", str(ca), ":csms_ca.pem"],
        ["cp", j("boot.py"), ":boot.py"],
        ["cp", j("main.py"), ":main.py"],
        ["exec", deploy.prune_code(stamp)],
    ]
    assert steps[9][0] == "exec" and "os.remove('SAFE_MODE')" in steps[9][1]
    assert steps[10:] == [["reset"]]


def test_dry_run_flash_frozen_copies_no_modules(bundle, stamp, tmp_path):
    out, _ = bundle
    r = run_tool("flash", "--port", "COM3", "--bundle", out, "--no-build", "--dry-run",
                 "--frozen", "--reset", "soft")
    argv = shlex.split(r.stdout)
    copied = [argv[i + 1] for i, a in enumerate(argv) if a == "cp"]
    assert copied == [os.path.join(out, p) for p in ("board.json", "boot.py", "main.py")]
    assert argv[-1] == "soft-reset"
    assert "no --config" in r.stderr


def test_flash_rejects_a_config_the_firmware_would_reject(bundle, tmp_path):
    out, _ = bundle
    bad = dict(GOOD_CONFIG)
    del bad["station_id"]
    r = run_tool("flash", "--port", "/dev/ttyUSB0", "--config", write_config(tmp_path, bad),
                 "--bundle", out, "--no-build", "--dry-run", check=False)
    assert r.returncode == 2
    assert "station_id" in r.stderr and "mpremote" not in r.stdout


def test_dry_run_log(tmp_path):
    r = run_tool("log", "--port", "/dev/ttyUSB0", "--dry-run")
    assert shlex.split(r.stdout) == ["mpremote", "connect", "/dev/ttyUSB0", "repl"]
    cap = str(tmp_path / "console.txt")
    r = run_tool("log", "--port", "/dev/ttyACM0", "--reset", "--capture", cap, "--dry-run")
    assert shlex.split(r.stdout) == ["mpremote", "connect", "/dev/ttyACM0", "reset", "+",
                                     "repl", "--capture", cap]


# ---- mpremote against an emulated board ------------------------------------

_BOARD_LOOP = r'''
import sys
_g = {"__name__": "__main__"}
_in = sys.stdin.buffer
while True:
    line = _in.readline()
    if not line:
        break
    n = int(line)
    code = b""
    while len(code) < n:
        chunk = _in.read(n - len(code))
        if not chunk:
            raise SystemExit
        code += chunk
    err = None
    try:
        exec(code.decode(), _g)
    except BaseException as e:
        err = e
    sys.stdout.write("\x04")
    if err is not None:
        sys.print_exception(err, sys.stdout)
    sys.stdout.write("\x04")
'''


def emulated_board_transport(root, loop_file, log):
    from mpremote.transport import Transport, TransportExecError

    class UnixPortBoard(Transport):
        """What mpremote's SerialTransport does, with the unix port as the board:
        the code mpremote sends runs there, in `root` (the board's "/")."""

        def __init__(self):
            self.in_raw_repl = False
            self.mounted = False
            self.use_raw_paste = True
            self._pending = None
            self._proc = None
            self._start()

        def _start(self):
            if self._proc is not None:
                self.close()
            self._proc = subprocess.Popen([MICROPYTHON, loop_file], cwd=root, bufsize=0,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        def close(self):
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
            self._proc = None

        def enter_raw_repl(self, soft_reset=True, timeout_overall=10):
            if soft_reset:  # a soft reset forgets all Python state
                log.append("soft-reset")
                self._start()
            self.in_raw_repl = True

        def exit_raw_repl(self):
            self.in_raw_repl = False

        def exec_raw_no_follow(self, command):
            if isinstance(command, str):
                command = command.encode()
            # mpremote's `reset` (not a chunk of a file that mentions it: fs_writefile
            # sends those as w(b'...'))
            if b"machine.reset()" in command and not command.startswith(b"w("):
                log.append("hard-reset")
                command = b"pass"
            self._pending = command

        def follow(self, timeout, data_consumer=None):
            code, self._pending = self._pending, None
            self._proc.stdin.write(b"%d\n" % len(code) + code)
            buf = b""
            while buf.count(b"\x04") < 2:
                chunk = self._proc.stdout.read(65536)
                if not chunk:
                    raise RuntimeError("emulated board died: %r" % buf)
                buf += chunk
            out, err, _ = buf.split(b"\x04")
            if data_consumer:
                data_consumer(out)
            return out, err

        def exec_raw(self, command, timeout=10, data_consumer=None):
            self.exec_raw_no_follow(command)
            return self.follow(timeout, data_consumer)

        def exec(self, command, data_consumer=None):
            out, err = self.exec_raw(command, data_consumer=data_consumer)
            if err:
                raise TransportExecError(out, err.decode())
            return out

        def eval(self, expression, parse=True):
            import ast

            out = self.exec(("print(repr({}))" if parse else "print({})").format(expression))
            return ast.literal_eval(out.strip().decode()) if parse else out.strip()

    return UnixPortBoard


def run_mpremote(argv, root, tmp_path, monkeypatch):
    """Run mpremote's main() on `argv` (without the leading "mpremote")."""
    from mpremote import main as mp_main

    loop_file = tmp_path / "board_loop.py"
    loop_file.write_text(_BOARD_LOOP)
    log = []
    board_cls = emulated_board_transport(str(root), str(loop_file), log)

    def fake_connect(state, args=None):
        log.append("connect %s" % (args.device[0] if args else "auto"))
        state.transport = board_cls()

    def fake_disconnect(state, _args=None):
        if state.transport:
            state.transport.close()
            state.transport = None

    monkeypatch.setattr(mp_main, "do_connect", fake_connect)
    monkeypatch.setattr(mp_main, "do_disconnect", fake_disconnect)
    commands = dict(mp_main._COMMANDS)
    commands["connect"] = (fake_connect, commands["connect"][1])
    commands["disconnect"] = (fake_disconnect, commands["disconnect"][1])
    monkeypatch.setattr(mp_main, "_COMMANDS", commands)
    monkeypatch.setattr(mp_main, "load_user_config", lambda: type("C", (), {"commands": {}})())
    monkeypatch.setattr(sys, "argv", ["mpremote"] + argv)
    rc = mp_main.main()
    fake_disconnect(type("S", (), {"transport": None})())  # nothing left open by us
    return rc, log


def seed_old_install(root):
    """A board that ran an older deploy plus a hand-copied source file or two."""
    for rel, data in {
        "lib/chargepilot/retired_module.mpy": b"M\x06old",
        "lib/chargepilot/station/agent.py": b"raise ImportError('stale source shadows agent.mpy')\n",
        "lib/chargepilot/oldpkg/x.mpy": b"M\x06old",
        "lib/otherlib/keep.py": b"VALUE = 7\n",
        "board.py": b"raise ImportError('stale board.py shadows board.mpy')\n",
        "state/profile-1.json": b"{}",
        "config.json": b'{"old": true}',
    }.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


@pytest.mark.parametrize("fresh", [True, False], ids=["empty-board", "old-install"])
def test_flash_through_mpremote_onto_an_emulated_board(bundle, stamp, tmp_path, monkeypatch,
                                                       fresh):
    out, _ = bundle
    root = tmp_path / "board_fs"
    root.mkdir()
    if not fresh:
        seed_old_install(root)
    cfg = write_config(tmp_path, GOOD_CONFIG)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n")
    steps = deploy.flash_steps(out, stamp, cfg, str(ca), "csms_ca.pem")
    argv = deploy.chain("/dev/ttyUSB0", steps, "mpremote")
    rc, log = run_mpremote(argv[1:], root, tmp_path, monkeypatch)
    assert rc == 0
    assert log[0] == "connect /dev/ttyUSB0" and log[-1] == "hard-reset"

    board = files_under(str(root))
    shipped = files_under(out)
    for f in stamp["files"]:
        assert board[f["path"]] == shipped[f["path"]], f["path"]
    assert json.loads(board["config.json"]) == GOOD_CONFIG
    assert board["csms_ca.pem"] == ca.read_bytes()
    lib_on_board = {p for p in board if p.startswith("lib/chargepilot/")}
    assert lib_on_board == {f["path"] for f in stamp["files"] if f["path"].startswith("lib/")}
    assert not (root / "lib" / "chargepilot" / "oldpkg").exists()
    assert "board.py" not in board
    if not fresh:  # what is not ours survives
        assert board["lib/otherlib/keep.py"] == b"VALUE = 7\n"
        assert board["state/profile-1.json"] == b"{}"

    # The agent imports from that filesystem with the ESP32's sys.path ('', .frozen, /lib)
    mods = module_names(lib_sources()) + ["board"]
    loaded = import_on_unix_port(":.frozen:lib", mods, str(root))
    assert sorted(loaded) == sorted(mods)
    assert all(f.endswith(".mpy") for f in loaded.values())


def test_prune_in_frozen_mode_leaves_only_what_the_filesystem_must_hold(bundle, stamp, tmp_path,
                                                                        monkeypatch):
    out, _ = bundle
    root = tmp_path / "board_fs"
    root.mkdir()
    seed_old_install(root)
    (root / "board.mpy").write_bytes(b"M\x06old")
    argv = deploy.chain("/dev/ttyUSB0", deploy.flash_steps(out, stamp, frozen=True), "mpremote")
    rc, log = run_mpremote(argv[1:], root, tmp_path, monkeypatch)
    assert rc == 0 and log[-1] == "hard-reset"
    board = files_under(str(root))
    # the frozen chargepilot and board must not be shadowed by filesystem copies
    assert not (root / "lib" / "chargepilot").exists()
    assert "board.mpy" not in board and "board.py" not in board
    for name in ("boot.py", "main.py", "board.json"):
        assert board[name] == files_under(out)[name]
    assert board["config.json"] == b'{"old": true}'  # no --config: left alone
    assert board["lib/otherlib/keep.py"] == b"VALUE = 7\n"


# ---- package.json (mip) ----------------------------------------------------

def test_package_json_is_current():
    r = run_tool("package-json", "--check", check=False)
    assert r.returncode == 0, "package.json is stale: run tools/deploy package-json\n" + r.stderr
    with open(os.path.join(ROOT, "package.json")) as f:
        assert f.read() == deploy.package_json_text()


def test_package_json_lists_every_module_and_only_existing_files():
    with open(os.path.join(ROOT, "package.json")) as f:
        pkg = json.load(f)
    assert pkg["version"] == deploy.version()
    urls = pkg["urls"]
    devices = [d for d, _ in urls]
    assert len(devices) == len(set(devices))
    for dev, src in urls:
        assert not src.startswith("/") and ".." not in src.split("/")
        assert os.path.isfile(os.path.join(ROOT, src)), src
    # mip.install("github:...") with its default target /lib: every path is relative
    # to /lib, so the library lands in /lib/chargepilot (not /lib/lib/chargepilot)
    lib = {d[:-3] for d in devices if d.startswith("chargepilot/")}
    assert lib == lib_sources()
    assert not [d for d in devices if d.startswith("lib/")]
    by_dev = dict(urls)
    assert by_dev["board.py"] == "boards/esp32_devkitc/board.py"
    # boot.py/main.py/board.json belong in /, not /lib: a separate step (docs/deploy.md)
    assert not {"boot.py", "main.py", "board.json"} & set(by_dev)


# ---- manifest.py (freezing) ------------------------------------------------

def run_manifest():
    calls = []

    def rec(kind):
        return lambda *a, **k: calls.append((kind, a, k))

    g = {name: rec(name) for name in ("package", "module", "include", "freeze", "metadata",
                                      "require")}
    path = os.path.join(ROOT, "manifest.py")
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), g)
    return calls


def frozen_modules(calls):
    """Module paths the recorded calls freeze, by makemanifest's rules (paths relative
    to the manifest's directory, package() without files = every .py below it)."""
    mods = set()
    for kind, a, k in calls:
        if kind == "package":
            name = a[0]
            base = os.path.join(ROOT, k.get("base_path", a[2] if len(a) > 2 else "."))
            files = k.get("files", a[1] if len(a) > 1 else None)
            if files is None:
                files = []
                for dirpath, _, names in os.walk(os.path.join(base, name)):
                    files += [os.path.relpath(os.path.join(dirpath, n), os.path.join(base, name))
                              for n in names if n.endswith(".py")]
            for f in files:
                assert os.path.isfile(os.path.join(base, name, f)), f
                mods.add((name + "/" + f.replace(os.sep, "/"))[:-3])
        elif kind == "module":
            base = os.path.join(ROOT, k.get("base_path", a[1] if len(a) > 1 else "."))
            assert os.path.isfile(os.path.join(base, a[0])), a[0]
            mods.add(a[0][:-3])
        elif kind in ("freeze", "require"):
            raise AssertionError("manifest.py uses %s(); extend this test" % kind)
    return mods


def test_manifest_freezes_every_module_and_the_board():
    calls = run_manifest()
    assert frozen_modules(calls) == lib_sources() | {"board"}
    includes = [a[0] for kind, a, _ in calls if kind == "include"]
    assert includes == ["$(PORT_DIR)/boards/manifest.py"]  # asyncio, ntptime, _boot
    meta = [k for kind, _, k in calls if kind == "metadata"]
    assert len(meta) == 1 and meta[0]["version"] == deploy.version()
