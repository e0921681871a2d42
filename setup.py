"""Build of petcd's one C extension: the native gRPC front end over libnghttp2 (Cython).

Metadata lives in pyproject.toml; this file only declares the extension. It is optional: where
libnghttp2's headers or a compiler are missing the build warns and goes on, and petcd falls back
to the grpcio front end at start-up (with a logged warning).
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # no Cython (e.g. a plain `setup.py --version`): no extension
    cythonize = None

SOURCE = "src/petcd/api/native/_h2.pyx"


def extensions() -> list[Extension]:
    if os.environ.get("PETCD_NO_NATIVE") == "1":
        return []
    generated = SOURCE.removesuffix(".pyx") + ".c"
    if cythonize is None and not os.path.exists(generated):
        return []
    extension = Extension(
        "petcd.api.native._h2",
        [SOURCE if cythonize is not None else generated],
        libraries=["nghttp2"],
        extra_compile_args=["-O2"],
        optional=True,  # a failed build is a warning: the grpcio front end still works
    )
    if cythonize is None:  # an sdist carries the generated C: no Cython needed to build it
        return [extension]
    return list(cythonize([extension], language_level=3, quiet=True))


setup(ext_modules=extensions())
