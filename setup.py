"""The C parts, both optional: without a compiler (or without libyaml's headers for the second) the
pure-Python paths are used, with the same results, slower; `calico-lens --version` says which are active.

- ``calico_lens.parse._scan``: the scanner for kernel LOG lines and Felix records;
- ``calico_lens.kube._snapyaml``: snapshot YAML read by libyaml straight into Python objects. libyaml
  is linked statically where its archive is installed (Debian's libyaml-dev), so the module needs no
  shared library at run time (the image has none).
"""

import os
import sysconfig

from setuptools import Extension, setup

_arch = sysconfig.get_config_var("MULTIARCH") or ""  # this Python's, e.g. x86_64-linux-gnu
_static = [p for p in (f"/usr/lib/{_arch}/libyaml.a", "/usr/lib/libyaml.a", "/usr/local/lib/libyaml.a")
           if os.path.isfile(p)]
_yaml = {"extra_objects": _static[:1]} if _static else {"libraries": ["yaml"]}

setup(ext_modules=[
    Extension("calico_lens.parse._scan", ["exporter/calico_lens/parse/_scan.c"], optional=True,
              extra_compile_args=["-O2"]),
    Extension("calico_lens.kube._snapyaml", ["exporter/calico_lens/kube/_snapyaml.c"], optional=True,
              extra_compile_args=["-O2"], **_yaml),
])
