"""tools/figures: measured figures in the docs come from the commands, not from hands.

The expected values come from running the sources directly here (the unix port's
own version, tools/deploy build's size line), not from tools/figures."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(ROOT, "tools", "figures")


def figures(*args):
    return subprocess.run([sys.executable, FIGURES] + list(args), capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_rewrites_marked_figures_and_check_sees_stale_ones(tmp_path):
    mp = os.path.join(ROOT, ".venv", "bin", "micropython")
    version = subprocess.run([mp, "-c", "import sys; print(sys.implementation.version)"],
                             capture_output=True, text=True).stdout
    major_minor = "%s.%s" % tuple(re.findall(r"\d+", version)[:2])
    log = tmp_path / "test.log"
    log.write_text("... 12 passed, 0 failed\nsummary: 1230 passed, 4 failed\n")
    doc = tmp_path / "doc.md"
    doc.write_text("MicroPython <!-- fig:micropython -->0.1<!-- /fig --> port; "
                   "<!-- fig:tests -->7<!-- /fig --> tests; untouched 1.28\n")
    r = figures("--check", str(doc), "--test-log", str(log))
    assert r.returncode == 1 and "stale" in r.stdout
    assert "0.1" in doc.read_text()  # --check changes nothing
    r = figures(str(doc), "--test-log", str(log))
    assert r.returncode == 0, r.stderr
    assert doc.read_text() == ("MicroPython <!-- fig:micropython -->%s<!-- /fig --> port; "
                               "<!-- fig:tests -->1,234<!-- /fig --> tests; untouched 1.28\n"
                               % major_minor)
    assert figures("--check", str(doc), "--test-log", str(log)).returncode == 0


def test_bundle_figure_is_the_build_line(tmp_path):
    out = tmp_path / "dist"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "deploy"), "build", "--out",
                        str(out)], capture_output=True, text=True, cwd=ROOT)
    line = r.stdout.strip().split("): ", 1)[1]
    doc = tmp_path / "d.md"
    doc.write_text("size <!-- fig:bundle -->old<!-- /fig -->, <!-- fig:bundle.kib -->0<!-- /fig --> KiB\n")
    assert figures(str(doc)).returncode == 0
    kib = re.search(r"\((\d+\.\d) KiB\)", line).group(1)
    assert doc.read_text() == "size <!-- fig:bundle -->%s<!-- /fig -->, <!-- fig:bundle.kib -->%s<!-- /fig --> KiB\n" % (line, kib)


def test_unknown_source_and_missing_bench_name_are_named(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("<!-- fig:nonsense -->1<!-- /fig -->\n")
    r = figures(str(doc))
    assert r.returncode != 0 and "unknown source 'nonsense'" in r.stderr
    doc.write_text("<!-- fig:bench:txstate:no_such_figure -->1<!-- /fig -->\n")
    r = figures(str(doc))  # txstate: the quickest bench (LittleFS counts, deterministic)
    assert r.returncode != 0 and "prints no 'no_such_figure'" in r.stderr
    assert "txstate." in r.stderr  # it says what the bench does print


def test_readme_and_docs_figures_are_marked():
    """The figures the issue found stale are under markers now."""
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(ROOT, "docs", "deploy.md")) as f:
        deploy = f.read()
    assert re.search(r"MicroPython <!-- fig:micropython -->[\d.]+<!-- /fig -->", readme)
    assert re.search(r"<!-- fig:tests -->[\d,]+<!-- /fig --> tests", readme)
    assert "<!-- fig:bundle -->" in deploy


def test_suite_time_comes_from_the_test_log(tmp_path):
    log = tmp_path / "test.log"
    log.write_text("suite time: 9 min 59 s\n...\nsuite time: 5 min 07 s\n1 passed, 0 failed\n")
    doc = tmp_path / "doc.md"
    doc.write_text("(<!-- fig:tests.time -->3 min<!-- /fig --> on 2 cores)\n")
    r = figures(str(doc), "--test-log", str(log))
    assert r.returncode == 0, r.stderr
    assert doc.read_text() == "(<!-- fig:tests.time -->5 min 07 s<!-- /fig --> on 2 cores)\n"
    log.write_text("1 passed, 0 failed\n")
    r = figures(str(doc), "--test-log", str(log))
    assert r.returncode != 0 and "suite time" in (r.stdout + r.stderr)
