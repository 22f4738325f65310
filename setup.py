"""Build hook for the C extensions (everything else is in pyproject.toml).

``assay.trace._native`` hashes many small messages per call with OpenSSL (the decision trace's
record, leaf and node hashes; see src/assay/trace/_native.c). It is optional: without a C
compiler or OpenSSL headers the build skips it and the trace falls back to hashlib (same hashes,
slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "assay.trace._native",
            ["src/assay/trace/_native.c"],
            libraries=["crypto"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        # the label store's batch id lookup (src/assay/store/_native.c), optional likewise
        Extension(
            "assay.store._native",
            ["src/assay/store/_native.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        # the policy library's rule evaluator inner loop, column typing, resolution and cap
        # grouping (src/assay/policy/_native.c), optional likewise: without it the numpy twins serve
        Extension(
            "assay.policy._native",
            ["src/assay/policy/_native.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        # the guard's candidate id check (src/assay/guard/_native.c), optional likewise
        Extension(
            "assay.guard._native",
            ["src/assay/guard/_native.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
