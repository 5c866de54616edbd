"""The C module built with AddressSanitizer and UBSan, run through the tests of what uses it (the
kernel-line scanner and the Felix record stage, property tests included): an out-of-bounds access or
undefined behaviour on any input the tests make aborts the run. It reads hostile input from the
node, so "never a crash" has to hold in its C too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.helpers import ROOT


def _runtime(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True).stdout
    assert os.path.isabs(path.strip()), f"gcc has no {name}: install gcc's sanitizer runtimes (make setup)"
    return path.strip()


def test_its_tests_pass_with_the_sanitized_c_module(tmp_path: Path) -> None:
    pkg = tmp_path / "calico_lens"
    shutil.copytree(ROOT / "exporter" / "calico_lens", pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    ext = pkg / "parse" / ("_scan" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(["gcc", "-shared", "-fPIC", "-g", "-O1", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                    "-fno-sanitize-recover=undefined", f"-I{sysconfig.get_paths()['include']}",
                    str(pkg / "parse" / "_scan.c"), "-o", str(ext)], check=True, capture_output=True, timeout=120)
    # PYTHONMALLOC=malloc: Python's own objects come from the sanitizer's heap too, so reads past them show
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "PYTHONMALLOC": "malloc",
           "LD_PRELOAD": f"{_runtime('libasan.so')} {_runtime('libubsan.so')}"}
    which = subprocess.run([sys.executable, "-c", "import calico_lens.parse._scan as s; print(s.__file__)"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert which.stdout.strip() == str(ext), which.stderr  # the sanitized build is the one under test
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                          str(ROOT / "tests" / "unit" / "test_parse.py"),
                          str(ROOT / "tests" / "unit" / "test_felix_records.py")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
