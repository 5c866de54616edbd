"""The C scanner for kernel LOG lines. Optional: without a compiler the pure-Python path is used
(same results, slower); `calico-lens --version` says which one is active."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("calico_lens.parse._scan", ["exporter/calico_lens/parse/_scan.c"], optional=True,
                             extra_compile_args=["-O2"])])
