"""Build hook for the C extensions (everything else is in pyproject.toml).

The four extensions are required: the build fails, loudly, without a C compiler (and, for the
trace, OpenSSL's headers). Each carries a per-record loop that no maintained library offers and
that the part serves from; a Python or numpy version of the same loop is kept only as a test
oracle, in tests/, and named as one (docs/architecture.md, "C extensions").

- ``assay.trace._native``: the decision trace's batch RFC 8785 JSON and SHA-256 (record, leaf and
  node hashes, pseudonyms), with OpenSSL (src/assay/trace/_native.c);
- ``assay.store._native``: the label store's batch id lookup and row gather;
- ``assay.policy._native``: the policy library's rule programs over a batch, column typing,
  slate resolution and cap grouping;
- ``assay.guard._native``: the guard's candidate id check.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "assay.trace._native",
            ["src/assay/trace/_native.c"],
            libraries=["crypto"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "assay.store._native",
            ["src/assay/store/_native.c"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "assay.policy._native",
            ["src/assay/policy/_native.c"],
            extra_compile_args=["-O3"],
        ),
        Extension(
            "assay.guard._native",
            ["src/assay/guard/_native.c"],
            extra_compile_args=["-O3"],
        ),
    ]
)
