"""Every interval assay reports comes from here: rates from :func:`rate_interval`, everything
else from a seeded bootstrap that says how often its statistic was undefined.

A foundation module (beside ``records`` and ``errors``) so that the engines (evaluate, redteam,
monitor, mitigate, judge validation) and the ``classify`` foundation all take their intervals
from one place; ``assay.evaluate.stats`` re-exports it. The conventions and their small-sample
behaviour are listed in docs/statistics.md.

Rates. A share of items (refusal rate, harmful rate, attack success rate, judge accuracy) gets a
binomial interval, never a bootstrap: the percentile bootstrap of 0 of 20 is [0, 0], a gate that
trusts it passes on no evidence. The default is the Wilson score interval with continuity
correction (Newcombe 1998, method 4; R's ``prop.test`` default), because it is the Wilson
variant whose coverage holds at every n: the uncorrected Wilson interval covers only 0.92 of the
time at n = 20, p = 0.05, and dips to 0.83 near p = 0.04 at n = 5 (exact figures in
docs/statistics.md). ``method`` selects the uncorrected Wilson interval (statsmodels'
``wilson``), Clopper-Pearson (exact, conservative) or Jeffreys (with Brown, Cai and DasGupta's
boundary rule: the bound at x = 0 is 0 and at x = n is 1, without which it never covers p = 0).
n = 0 gives (0, 1): no evidence, never a point.

Calibration. :func:`expected_calibration_error` bins probabilities right-closed, as Guo et al.
(2017) define ECE, with probabilities on an edge (to within 1e-9) in the bin that edge closes.

Bootstrap. Statistics that are not a share of items (a mean score, kappa, a BBQ bias score, a
Gini coefficient) get a seeded percentile bootstrap over the units. A resample whose statistic
is undefined (NaN: a kappa with one class, a BBQ bias with no directional answer) is counted and
reported beside the interval; when more than ``(1 - level) / 2`` of the resamples are undefined
(2.5% at 95%), the undefined ones could have been a whole tail, so the interval is reported as
unavailable (NaN bounds and a note) instead of as a silently conditional one. Fewer than two
units give no bootstrap interval either (the resamples of one value are that value).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from assay.errors import BadInput

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 20261129
DEFAULT_CONFIDENCE = 0.95
RATE_METHODS = ("wilson", "wilson-uncorrected", "clopper-pearson", "jeffreys")
DEFAULT_RATE_METHOD = "wilson"
BOOTSTRAP = "bootstrap"


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A metric value with its sample size and interval.

    ``method`` names where the interval came from (a rate method, or ``"bootstrap"``);
    a bootstrap also reports how many ``resamples`` it drew and how many were ``undefined``.
    ``note`` says why an interval is unavailable (NaN bounds) when it is.
    """

    value: float
    n: int
    ci_low: float
    ci_high: float
    method: str = BOOTSTRAP
    resamples: int = 0
    undefined: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {
            "value": self.value, "n": self.n, "ci_low": self.ci_low, "ci_high": self.ci_high, "method": self.method,
        }
        if self.method == BOOTSTRAP:
            out["resamples"] = self.resamples
            out["undefined"] = self.undefined
        if self.note:
            out["note"] = self.note
        return out

    @property
    def interval(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)

    @property
    def available(self) -> bool:
        """Whether the interval has finite bounds."""
        return math.isfinite(self.ci_low) and math.isfinite(self.ci_high)


NAN_AGGREGATE = Aggregate(math.nan, 0, math.nan, math.nan, note="no values")


# ---------------------------------------------------------------------------------------------
# rates


def _check_level(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < float(confidence) < 1.0:
        raise BadInput(f"confidence must be a number strictly between 0 and 1, got {confidence!r}")
    return float(confidence)


@functools.lru_cache(maxsize=32)
def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.isf((1.0 - confidence) / 2.0))


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BadInput(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _wilson_cc_lower(x: int, n: int, z: float) -> float:
    """Lower bound of the continuity-corrected Wilson interval (Newcombe 1998, method 4): the
    smaller root of (x - 1/2 - n p)^2 = z^2 n p (1 - p); 0 when x = 0."""
    if x == 0:
        return 0.0
    h = x - 0.5
    z2 = z * z
    low = (2.0 * h + z2 - z * math.sqrt(z2 + 4.0 * h * (1.0 - h / n))) / (2.0 * (n + z2))
    return min(max(low, 0.0), x / n)


def rate_interval(
    successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE, method: str = DEFAULT_RATE_METHOD,
) -> tuple[float, float]:
    """Two-sided ``confidence`` interval for a binomial rate ``successes / n``.

    ``method``: ``"wilson"`` (Wilson score with continuity correction, the default),
    ``"wilson-uncorrected"``, ``"clopper-pearson"`` or ``"jeffreys"``. n == 0 gives (0.0, 1.0).
    The bounds are exactly 0 at successes == 0 and exactly 1 at successes == n, so a true rate
    of 0 or 1 is always covered.
    """
    x, n = _count(successes, "successes"), _count(n, "n")
    level = _check_level(confidence)
    if method not in RATE_METHODS:
        raise BadInput(f"unknown rate interval method {method!r}; use one of {', '.join(RATE_METHODS)}")
    if n < 0 or not 0 <= x <= n:
        raise BadInput(f"a rate needs 0 <= successes <= n, got successes={x}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    alpha = 1.0 - level
    if method == "wilson":
        z = _z(level)
        low, high = _wilson_cc_lower(x, n, z), 1.0 - _wilson_cc_lower(n - x, n, z)
    elif method == "wilson-uncorrected":
        z = _z(level)
        p, z2 = x / n, z * z
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        low, high = centre - half, centre + half
    else:
        from scipy.stats import beta

        a, b = (x, x + 1) if method == "clopper-pearson" else (x + 0.5, x + 0.5)
        c, d = (n - x + 1, n - x) if method == "clopper-pearson" else (n - x + 0.5, n - x + 0.5)
        low = float(beta.ppf(alpha / 2, a, c)) if x > 0 else 0.0
        high = float(beta.isf(alpha / 2, b, d)) if x < n else 1.0
    low = 0.0 if x == 0 else min(max(low, 0.0), 1.0)
    high = 1.0 if x == n else min(max(high, 0.0), 1.0)
    return (float(low), float(high))


def rate_from_counts(
    successes: int, n: int, *, confidence: float = DEFAULT_CONFIDENCE, method: str = DEFAULT_RATE_METHOD,
) -> Aggregate:
    """A rate as an :class:`Aggregate`: value NaN and interval (0, 1) when n == 0."""
    low, high = rate_interval(successes, n, confidence, method)
    value = successes / n if n else math.nan
    return Aggregate(value, int(n), low, high, method=method, note="" if n else "no items: no evidence")


def rate_aggregate(
    flags: Sequence[bool] | np.ndarray, *, confidence: float = DEFAULT_CONFIDENCE, method: str = DEFAULT_RATE_METHOD,
) -> Aggregate:
    """A proportion (refusal rate, error rate, judge accuracy) of boolean ``flags``, with its
    binomial interval. NaN entries (no verdict) are left out of n."""
    x = np.asarray(flags, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if x.size and not np.isin(x, (0.0, 1.0)).all():
        raise BadInput("a rate needs boolean (0/1) values")
    return rate_from_counts(int(np.count_nonzero(x)), int(x.size), confidence=confidence, method=method)


def is_rate(values: Sequence[object]) -> bool:
    """Whether ``values`` are flags (Python or numpy booleans), so their mean is a rate."""
    return bool(values) and all(isinstance(v, bool | np.bool_) for v in values)


# ---------------------------------------------------------------------------------------------
# bootstrap


def max_undefined_share(level: float) -> float:
    """The share of undefined resamples beyond which a bootstrap interval is unavailable:
    one tail, (1 - level) / 2 — past it the undefined resamples could have been a whole tail."""
    return (1.0 - level) / 2.0


def _bootstrap_aggregate(value: float, n: int, samples: np.ndarray, level: float) -> Aggregate:
    """The percentile interval of ``samples``, counting and judging the undefined ones."""
    resamples = int(samples.size)
    finite = samples[np.isfinite(samples)]
    undefined = resamples - int(finite.size)
    if not math.isfinite(value):
        return Aggregate(value, n, math.nan, math.nan, resamples=resamples, undefined=undefined,
                         note="the statistic is undefined on these data")
    if undefined > max_undefined_share(level) * resamples or finite.size == 0:
        return Aggregate(value, n, math.nan, math.nan, resamples=resamples, undefined=undefined,
                         note=f"interval unavailable: the statistic was undefined in {undefined} of {resamples} resamples "
                              f"(more than {max_undefined_share(level):.1%})")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Aggregate(value, n, float(low), float(high), resamples=resamples, undefined=undefined)


def _too_few(value: float, n: int) -> Aggregate:
    return Aggregate(value, n, math.nan, math.nan, note=f"{n} unit: no bootstrap interval (needs at least 2)")


def mean_aggregate(
    values: Sequence[float] | np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Aggregate:
    """Mean of ``values`` (NaNs dropped) with a percentile-bootstrap interval over items.

    For scores, not rates: a mean of booleans belongs to :func:`rate_aggregate`."""
    _check_level(level)
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return NAN_AGGREGATE
    value = float(x.mean())
    if n == 1:
        return _too_few(value, 1)
    rng = np.random.default_rng(seed)
    # Resample in chunks so memory stays bounded for very large n.
    chunk = max(1, min(resamples, 2_000_000 // n))
    means = []
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(size, n))
        means.append(x[idx].mean(axis=1))
        done += size
    return _bootstrap_aggregate(value, n, np.concatenate(means) if means else np.zeros(0), level)


def mean_aggregates(
    columns: Mapping[str, Sequence[float] | np.ndarray],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> dict[str, Aggregate]:
    """:func:`mean_aggregate` of several columns over the same units, drawing each resample's
    indices once for all of them (the draws are the ones :func:`mean_aggregate` makes, so each
    column gets exactly the interval it would get alone). Columns with NaNs, or of different
    lengths, are done one by one."""
    arrays = {name: np.asarray(v, dtype=float) for name, v in columns.items()}
    sizes = {a.size for a in arrays.values()}
    if len(sizes) != 1 or any(not np.isfinite(a).all() for a in arrays.values()) or sizes == {0} or sizes == {1}:
        return {name: mean_aggregate(a, resamples=resamples, level=level, seed=seed) for name, a in arrays.items()}
    _check_level(level)
    n = sizes.pop()
    names = list(arrays)
    matrix = np.column_stack([arrays[name] for name in names])
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // n))  # the same draws as mean_aggregate
    means = []
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(size, n))
        means.append(np.stack([matrix[:, j][idx].mean(axis=1) for j in range(len(names))], axis=1))
        done += size
    samples = np.concatenate(means) if means else np.zeros((0, len(names)))
    return {name: _bootstrap_aggregate(float(matrix[:, j].mean()), n, samples[:, j], level) for j, name in enumerate(names)}


def statistic_aggregate(
    n: int,
    statistic: Callable[[np.ndarray], float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Aggregate:
    """Any statistic of ``n`` units (users, items) with a bootstrap over the units.

    ``statistic(index)`` receives an integer index array (``arange(n)`` for the point value, a
    resample with replacement otherwise) and returns the statistic of those units (NaN where it
    is undefined). Used for corpus-level metrics such as coverage, Gini, kappa or a group gap
    that are not plain means.
    """
    _check_level(level)
    if n == 0:
        return NAN_AGGREGATE
    value = float(statistic(np.arange(n)))
    if n == 1:
        return _too_few(value, 1)
    rng = np.random.default_rng(seed)
    samples = np.fromiter(
        (statistic(rng.integers(0, n, size=n)) for _ in range(resamples)), dtype=float, count=resamples
    )
    return _bootstrap_aggregate(value, n, samples, level)


def bootstrap_interval(value: float, n: int, samples: Sequence[float] | np.ndarray, *, level: float = DEFAULT_CONFIDENCE) -> Aggregate:
    """The percentile interval of already drawn bootstrap ``samples`` of a statistic whose
    point value is ``value`` over ``n`` units, with the undefined (NaN) samples counted and the
    interval unavailable past :func:`max_undefined_share`. For callers that draw one set of
    resamples for several statistics (the classifier metrics)."""
    _check_level(level)
    if n < 2:
        return _too_few(value, n) if n else NAN_AGGREGATE
    return _bootstrap_aggregate(float(value), int(n), np.asarray(samples, dtype=float), level)


# ---------------------------------------------------------------------------------------------
# calibration

EDGE_TOLERANCE = 1e-9


def calibration_bins(probs: Sequence[float] | np.ndarray, bins: int = 10) -> np.ndarray:
    """Bin of each probability among ``bins`` equal-width bins, right-closed as Guo et al.
    (2017) define them: [0, 1/M], (1/M, 2/M], ..., ((M-1)/M, 1] (scikit-learn's
    ``calibration_curve`` bins the same way). A probability within ``EDGE_TOLERANCE`` of an edge
    counts as on it, so 0.3 lands in (0.2, 0.3] whatever rounding produced it (``np.linspace``'s
    0.30000000000000004 edge or 0.3 * 10 are not what a reader of the bin table means)."""
    scaled = np.asarray(probs, dtype=float) * bins
    nearest = np.rint(scaled)
    scaled = np.where(np.abs(scaled - nearest) <= EDGE_TOLERANCE * bins, nearest, scaled)
    return np.clip(np.ceil(scaled).astype(np.int64) - 1, 0, bins - 1)


def expected_calibration_error(labels: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray, bins: int = 10) -> float:
    """Expected calibration error (Guo et al. 2017): sum over the :func:`calibration_bins` of
    (bin size / n) * |observed positive rate - mean probability|. NaN with no items."""
    y = np.asarray(labels, dtype=float).ravel()
    p = np.asarray(probs, dtype=float).ravel()
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
        raise BadInput(f"ECE needs a whole number of bins >= 1, got {bins!r}")
    if y.shape != p.shape:
        raise BadInput(f"ECE needs one label per probability, got {y.size} labels and {p.size} probabilities")
    if not np.isin(y, (0.0, 1.0)).all():
        raise BadInput("ECE labels must be 0 or 1")
    if not (np.isfinite(p).all() and ((p >= 0.0) & (p <= 1.0)).all()):
        raise BadInput("ECE probabilities must be finite and within [0, 1]")
    if y.size == 0:
        return math.nan
    which = calibration_bins(p, int(bins))
    size = np.bincount(which, minlength=bins).astype(float)
    gap = np.abs(np.bincount(which, weights=y, minlength=bins) - np.bincount(which, weights=p, minlength=bins))
    # per bin: size/n * |sum(y)/size - sum(p)/size| = |sum(y) - sum(p)| / n
    return float(gap[size > 0].sum() / y.size)
