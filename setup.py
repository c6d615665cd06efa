"""Only the C extension lives here; all metadata is in pyproject.toml (setuptools merges both).

``backbeat.kvstore._fastget`` is optional: without it (e.g. in a Cloud Functions zip, which ships
no compiled files) the pure-Python reader serves the same answers.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("backbeat.kvstore._fastget", ["lib/kvstore/_fastget.c"], extra_compile_args=["-O3"])
    ]
)
