"""Mitigation by fine-tuning: turn red-team findings and evaluation failures into a safer model
version, prove it by re-evaluation, and register it with lineage.

The loop is find -> build mitigation data (:mod:`assay.mitigate.dataset`) -> LoRA fine-tune with
checkpoints and resume (:mod:`assay.mitigate.train`) -> re-evaluate before/after with intervals
(:mod:`assay.mitigate.reeval`) -> register weights by hash with lineage and submit to the
deployment gate (:mod:`assay.mitigate.lineage`). Heavy libraries (torch, transformers, peft) are
imported inside the functions that need them so that importing this package stays cheap.
"""
