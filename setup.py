"""Packaging: builds the C core ``_ringbuf._native`` with cffi (out-of-line API mode)."""
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="ipc-layer",
    version="0.1.0",
    description="A Django Channels channel layer in POSIX shared memory, for sites on one host",
    long_description=Path(__file__).with_name("README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    # _memo: the bounded-cache helper shared by _ringbuf and ipc_layer (a leaf module).
    py_modules=["_memo"],
    packages=find_packages(include=["_ringbuf", "ipc_layer", "ipc_layer.*", "server", "server.*",
                                    "worker", "worker.*", "bench", "bench.*",
                                    "examples", "examples.*"]),
    package_data={"_ringbuf": ["cdef.h", "include/*.h", "src/*.c", "src/*.h", "Makefile"],
                  "ipc_layer": ["py.typed"],
                  # the browser side of worker.generic.websockets (Django's staticfiles finds it)
                  "worker": ["static/worker/js/*.js"],
                  # the chat example's pages (ipc-demo)
                  "examples.chat": ["templates/chat/*.html", "templates/registration/*.html",
                                    "static/chat/*.js", "static/chat/*.css"]},
    include_package_data=True,
    setup_requires=["cffi>=1.15"],
    cffi_modules=["_ringbuf/build_ffi.py:ffibuilder"],
    # twisted + autobahn: the protocol server (server/): Twisted's HTTP and
    # endpoints and autobahn's WebSocket rather than our own parsers.
    # twisted's tls + http2 extras: HTTP/2 by ALPN on ssl: endpoints, as Daphne offers.
    # django: the workers (worker/) run a Django project, and ipc-demo (the README's first
    # command) runs the chat example after a plain `pip install -e .`.
    install_requires=["cffi>=1.15", "msgpack>=1.0", "twisted[tls,http2]>=23.8", "autobahn>=23.1",
                      "django>=4.2"],
    extras_require={
        "tests": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "redis>=5", "hiredis>=2",
                  "channels>=4", "channels_redis>=4", "daphne>=4", "matplotlib>=3.6", "msgpack>=1.0",
                  "websockets>=12",
                  # the example site's browser test drives Debian's chromium through its
                  # chromedriver (never a downloaded browser)
                  "selenium>=4.11",
                  # the worker tests: the test Django site, and a real HTTP client for the
                  # integration suite (through ipc-server)
                  "django>=4.2", "httpx>=0.27",
                  # python -m bench stack's smoke test runs every row: gunicorn sync workers and
                  # uvicorn serve the bench's Django project beside Daphne and our stack.
                  "gunicorn>=21", "uvicorn>=0.30",
                  # the deployment tests run the site under a real supervisord with the
                  # configuration manage.py supervisor_conf writes.
                  "supervisor>=4.2",
                  # scripts/lint (run by scripts/test); pinned to a minor so a new release's
                  # rules cannot turn CI red on their own.
                  "ruff>=0.17.6,<0.18", "mypy>=2.4,<2.5"],
        "redis": ["redis>=5", "hiredis>=2"],
        "channels4": ["channels>=4", "asgiref>=3.6"],
        # supervisord itself, for the configuration manage.py supervisor_conf writes.
        "supervisor": ["supervisor>=4.2"],
        "bench": ["redis>=5", "hiredis>=2", "channels>=4", "channels_redis>=4", "matplotlib>=3.6",
                  "daphne>=4", "uvicorn>=0.30", "websockets>=12",
                  # bench stack: the Django stacks users run today, and py-spy for --profile.
                  "django>=4.2", "gunicorn>=21", "py-spy>=0.3"],
    },
    entry_points={
        "console_scripts": [
            "ipc-bench = bench.cli:main",
            "ipc-demo = examples.chat.demo:main",
            "ipc-layer = ipc_layer.cli:main",
            "ipc-server = server.cli:main",
            "ipc-worker = worker.cli:main",
        ],
    },
    zip_safe=False,
    classifiers=[
        "Framework :: Django",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: C",
        "Programming Language :: Python :: 3",
    ],
)
