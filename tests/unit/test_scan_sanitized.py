"""The C modules built with AddressSanitizer and UBSan, run through the tests of what uses them (the
kernel-line scanner, the Felix record stage and the snapshot YAML reader, property tests included):
an out-of-bounds access or undefined behaviour on any input the tests make aborts the run. They read
hostile input, so "never a crash" has to hold in their C too."""

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
    built = {}
    for module, libs in (("parse._scan", []), ("kube._snapyaml", ["-lyaml"])):
        src = pkg.joinpath(*module.split(".")).with_suffix(".c")
        built[module] = src.with_suffix(sysconfig.get_config_var("EXT_SUFFIX"))
        subprocess.run(["gcc", "-shared", "-fPIC", "-g", "-O1", "-fsanitize=address,undefined",
                        "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined",
                        f"-I{sysconfig.get_paths()['include']}", str(src), *libs, "-o", str(built[module])],
                       check=True, capture_output=True, timeout=120)
    # PYTHONMALLOC=malloc: Python's own objects come from the sanitizer's heap too, so reads past them show
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "PYTHONMALLOC": "malloc",
           "LD_PRELOAD": f"{_runtime('libasan.so')} {_runtime('libubsan.so')}"}
    show = "import calico_lens.parse._scan as s, calico_lens.kube._snapyaml as y; print(s.__file__, y.__file__)"
    which = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True, timeout=60)
    assert which.stdout.split() == [str(p) for p in built.values()], which.stderr  # the sanitized builds are tested
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                          str(ROOT / "tests" / "unit" / "test_parse.py"),
                          str(ROOT / "tests" / "unit" / "test_felix_records.py"),
                          str(ROOT / "tests" / "unit" / "test_snapyaml.py")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
