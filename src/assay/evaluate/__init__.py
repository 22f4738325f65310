"""Evaluation engine: suites = dataset x target x scorers x metrics x gates, for LLMs and
recommenders. Results stream to disk, runs resume, every aggregate carries n and a 95% interval.

Submodules import lazily; ``assay.evaluate.recsys_metrics`` is usable on its own.
"""
