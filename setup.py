"""Builds the Cython hot path (kvstore._native); everything else is in pyproject.toml.

The sources sit under native/kvstore/ so that Cython finds the module's .pxd contract by
its full name (kvstore/_native.pxd) on the include path.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(
                "kvstore._native",
                ["native/kvstore/_native.pyx"],
                include_dirs=["native"],
                extra_compile_args=["-O2"],
            )
        ],
        include_path=["native"],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    )
)
