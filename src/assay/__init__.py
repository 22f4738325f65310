"""assay: a safety operating system for recommender systems and LLM deployments."""

__version__ = "0.1.0"
