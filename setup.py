"""The C parts, both optional: without a compiler (or without libyaml's headers for the second) the
pure-Python paths are used, with the same results, slower; `calico-lens --version` says which are active.

- ``calico_lens.parse._scan``: the scanner for kernel LOG lines and Felix records;
- ``calico_lens.kube._snapyaml``: snapshot YAML read by libyaml straight into Python objects. libyaml
  is linked statically where its archive is installed (Debian's libyaml-dev), so the module needs no
  shared library at run time (the image has none).
"""

import glob

from setuptools import Extension, setup

_static = sorted(glob.glob("/usr/lib/*/libyaml.a") + glob.glob("/usr/lib/libyaml.a")
                 + glob.glob("/usr/local/lib/libyaml.a"))
_yaml = {"extra_objects": _static[:1]} if _static else {"libraries": ["yaml"]}

setup(ext_modules=[
    Extension("calico_lens.parse._scan", ["exporter/calico_lens/parse/_scan.c"], optional=True,
              extra_compile_args=["-O2"]),
    Extension("calico_lens.kube._snapyaml", ["exporter/calico_lens/kube/_snapyaml.c"], optional=True,
              extra_compile_args=["-O2"], **_yaml),
])
