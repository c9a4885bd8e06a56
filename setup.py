"""The optional C fast path (imrs._fastpath); everything else is in pyproject.toml.

``optional=True``: without a C compiler and Python headers the install still succeeds and
the pure-Python answer path is used (imrs.answer.fastc.AVAILABLE is then False).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("imrs._fastpath", ["src/imrs/_fastpath.c"], optional=True)])
