"""The optional C hot path (imrs._fastpath, sources in csrc/fastpath/); everything else is
in pyproject.toml.

``optional=True``: without a C compiler and Python headers the install still succeeds and
the pure-Python paths are used (imrs.answer.fastc.AVAILABLE is then False).
"""

from setuptools import Extension, setup

SOURCES = ["csrc/fastpath/module.c", "csrc/fastpath/answer.c", "csrc/fastpath/rrl.c", "csrc/fastpath/udp.c",
           "csrc/fastpath/traffic.c", "csrc/fastpath/toplabels.c", "csrc/fastpath/errlimit.c",
           "csrc/fastpath/shed.c"]

setup(ext_modules=[Extension("imrs._fastpath", SOURCES, include_dirs=["csrc/fastpath"],
                             depends=["csrc/fastpath/fastpath.h"], optional=True)])
