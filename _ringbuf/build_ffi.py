"""cffi out-of-line API-mode builder for ``_ringbuf._native``.

``setup.py`` names this file in ``cffi_modules``; the C lives in real
``.c``/``.h`` files beside it (never ``ffi.verify()``).  Run directly
(``python _ringbuf/build_ffi.py``) to build in place for development.
"""
from __future__ import annotations

import os
import sysconfig

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = sorted(
    os.path.join("_ringbuf", "src", name)
    for name in os.listdir(os.path.join(HERE, "src"))
    if name.endswith(".c")
)

# Warnings are errors: the C core must build clean on every compiler we ship to.
CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"]

ffibuilder = FFI()
with open(os.path.join(HERE, "cdef.h")) as f:
    ffibuilder.cdef(f.read())

ffibuilder.set_source(
    "_ringbuf._native",
    '#include "internal.h"\n',  # ringbuf.h, and the layout structs cdef.h names
    sources=SOURCES,
    include_dirs=[os.path.join("_ringbuf", "include"), os.path.join("_ringbuf", "src")],
    extra_compile_args=CFLAGS,
    libraries=["pthread"],
)

if __name__ == "__main__":
    # In-place development build: run from the project root.
    os.chdir(os.path.dirname(HERE))
    ffibuilder.compile(verbose=True)
    del sysconfig
