"""Builds the optional compiled hot path (pgguard/_speedups/_compiled.pyx); the metadata
is in setup.cfg.

Without Cython or a C compiler (or with PGGUARD_PURE=1 at build time) the install still
succeeds and pgguard runs on the pure-Python twins (pgguard/_speedups/_pure.py).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PYX = "pgguard/_speedups/_compiled.pyx"
C_FILE = PYX[:-4] + ".c"


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: the extension is only a speed-up."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: fall back to pure Python
            print(f"pgguard: compiled speed-ups not built ({exc}); using pure Python",
                  file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"pgguard: {ext.name} not built ({exc}); using pure Python",
                  file=sys.stderr)


def extensions():
    if os.environ.get("PGGUARD_PURE", "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        # An sdist may carry the generated C file: it builds without Cython.
        if os.path.exists(C_FILE):
            return [Extension("pgguard._speedups._compiled", [C_FILE], optional=True)]
        print("pgguard: Cython not installed; using pure Python", file=sys.stderr)
        return []
    try:
        return cythonize([Extension("pgguard._speedups._compiled", [PYX], optional=True)],
                         compiler_directives={"language_level": "3"}, quiet=True)
    except Exception as exc:
        print(f"pgguard: cythonize failed ({exc}); using pure Python", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
