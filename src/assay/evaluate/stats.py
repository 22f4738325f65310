"""The evaluation engine's intervals: :mod:`assay.stats` (a foundation module, so that every part
takes its intervals from one place), under the name the engine's callers have always used.

Every number the evaluation engine reports is an :class:`Aggregate`: the point value, the number
of items behind it, and an interval — a binomial one for rates (:func:`rate_interval`, Wilson with
continuity correction by default), a seeded percentile bootstrap for everything else, with the
undefined resamples counted. See docs/statistics.md.
"""

from assay.stats import (
    BOOTSTRAP,
    DEFAULT_CONFIDENCE,
    DEFAULT_RATE_METHOD,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    NAN_AGGREGATE,
    RATE_METHODS,
    Aggregate,
    is_rate,
    max_undefined_share,
    mean_aggregate,
    mean_aggregates,
    rate_aggregate,
    rate_from_counts,
    rate_interval,
    statistic_aggregate,
)

__all__ = [
    "BOOTSTRAP",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RATE_METHOD",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "NAN_AGGREGATE",
    "RATE_METHODS",
    "Aggregate",
    "is_rate",
    "max_undefined_share",
    "mean_aggregate",
    "mean_aggregates",
    "rate_aggregate",
    "rate_from_counts",
    "rate_interval",
    "statistic_aggregate",
]
