"""assay: a safety operating system for recommender systems and LLM deployments."""

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict[str, str]):
    """A module ``__getattr__`` for ``package`` that imports each exported name from the module
    ``exports`` maps it to, on first use: a part's ``__init__`` documents its public names
    without importing its engines, so ``assay --help`` and a part's CLI stay cheap."""
    import importlib

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
