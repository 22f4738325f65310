"""Time-based splits: each user's history in time order, the latest part held out.

Why per user and not one global date: ml-latest-small users mostly rate in one session, so a
global cut-off leaves fewer than 30 of 610 users with both a past and a future. Holding out the
latest fraction of *each* user's ratings keeps every evaluated interaction later than everything
used to fit that user's profile; the remaining leak (other users' later ratings feed item
popularity) is documented in docs/recsys.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from assay.errors import BadInput


@dataclass
class Split:
    base: pd.DataFrame  # fits retrieval + features for ranker training
    valid: pd.DataFrame  # labels for ranker training
    test: pd.DataFrame  # held out for offline evaluation

    @property
    def before_test(self) -> pd.DataFrame:
        """Everything earlier than each user's test part (fits the served model)."""
        return pd.concat([self.base, self.valid], ignore_index=True)


def temporal_split(
    ratings: pd.DataFrame,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.2,
    min_history: int = 5,
) -> Split:
    """Per user, by timestamp (ties broken by item id): the last ``test_fraction`` of ratings is
    test, the last ``valid_fraction`` of what remains is validation, the rest is base. Users with
    fewer than ``min_history`` ratings stay wholly in base."""
    if not (0 < test_fraction < 1 and 0 < valid_fraction < 1):
        raise BadInput(
            f"split fractions must be in (0, 1); got test={test_fraction}, valid={valid_fraction}"
        )
    df = ratings.sort_values(["user_id", "ts", "item_id"], kind="stable").reset_index(drop=True)
    n = df.groupby("user_id")["item_id"].transform("size").to_numpy()
    pos = df.groupby("user_id").cumcount().to_numpy()
    n_test = np.where(n >= min_history, np.maximum(1, np.floor(n * test_fraction)), 0)
    rest = n - n_test
    n_valid = np.where(n >= min_history, np.maximum(1, np.floor(rest * valid_fraction)), 0)
    is_test = pos >= n - n_test
    is_valid = (~is_test) & (pos >= rest - n_valid)
    return Split(
        df[~is_test & ~is_valid].reset_index(drop=True),
        df[is_valid].reset_index(drop=True),
        df[is_test].reset_index(drop=True),
    )
