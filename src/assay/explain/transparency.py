"""Transparency report per surface, in the spirit of the EU Digital Services Act, Art. 27: the
main parameters that determine what a user is shown, their relative importance, how that
differs between user groups (active vs light users), and the options that change it.

Importance is the mean absolute TreeSHAP contribution of each named feature to the ranker's
score over the films actually shown (top-k) to a sample of users, normalised to 100%.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import BadInput
from assay.explain.ranking import DESCRIPTIONS, explain_request
from assay.recsys.features import FEATURE_GROUPS, FEATURE_NAMES
from assay.recsys.htmlreport import figure, page, pyplot, table
from assay.recsys.model import Recommender


@dataclass
class Transparency:
    surface: str
    k: int
    n_users: dict[str, int]  # group -> users
    importance: dict[
        str, dict[str, float]
    ]  # group ("all", "active", "light") -> feature -> share (0..1)
    direction: dict[str, float]  # feature -> mean signed contribution (all users)
    group_importance: dict[str, dict[str, float]]  # user group -> signal family -> share

    def to_dict(self) -> dict[str, Any]:
        return {
            "surface": self.surface,
            "k": self.k,
            "n_users": self.n_users,
            "importance": self.importance,
            "direction": self.direction,
            "group_importance": self.group_importance,
        }

    def main_parameters(self, n: int = 4) -> list[tuple[str, float]]:
        ranked = sorted(self.importance["all"].items(), key=lambda kv: -kv[1])
        return ranked[:n]


def transparency(
    rec: Recommender, surface: str, *, k: int = 10, n_users: int = 200, seed: int = 0
) -> Transparency:
    """Importance of each signal over the top-k shown to a seeded sample of known users."""
    if k <= 0 or n_users <= 0:
        raise BadInput("k and n_users must be positive")
    users = rec.state.user_ids
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(users, size=min(n_users, users.size), replace=False))
    counts = rec.state.user_count
    cut = float(np.median(counts))
    per_group: dict[str, list[np.ndarray]] = {"all": [], "active": [], "light": []}
    signed: list[np.ndarray] = []
    for user in sample:
        att, _ = explain_request(rec, int(user))
        top = np.abs(att.contributions[:k])
        group = "active" if counts[rec.state.user_index(int(user))] > cut else "light"
        per_group["all"].append(top)
        per_group[group].append(top)
        signed.append(att.contributions[:k])
    importance: dict[str, dict[str, float]] = {}
    group_importance: dict[str, dict[str, float]] = {}
    for g, rows in per_group.items():
        if not rows:
            continue
        mean = np.vstack(rows).mean(axis=0)
        share = mean / mean.sum() if mean.sum() > 0 else mean
        importance[g] = {name: float(v) for name, v in zip(FEATURE_NAMES, share, strict=True)}
        fam: dict[str, float] = {}
        for name, v in importance[g].items():
            fam[FEATURE_GROUPS[name]] = fam.get(FEATURE_GROUPS[name], 0.0) + v
        group_importance[g] = fam
    direction = {
        name: float(v)
        for name, v in zip(FEATURE_NAMES, np.vstack(signed).mean(axis=0), strict=True)
    }
    return Transparency(
        surface,
        k,
        {g: len(r) for g, r in per_group.items()},
        importance,
        direction,
        group_importance,
    )


def transparency_html(rep: Transparency, rec: Recommender, bundle: Any | None = None) -> str:
    plt = pyplot()
    fams = sorted(rep.group_importance["all"], key=lambda f: -rep.group_importance["all"][f])
    fig, ax = plt.subplots(figsize=(6.5, 3))
    ax.barh(fams[::-1], [rep.group_importance["all"][f] * 100 for f in fams[::-1]], color="#4c72b0")
    ax.set_xlabel("relative importance (%)")
    ax.set_title(f"main parameters of the {rep.surface} ranking")
    names = sorted(FEATURE_NAMES, key=lambda n: -rep.importance["all"][n])
    fig2, ax2 = plt.subplots(figsize=(8, 3.6))
    x = np.arange(len(names))
    for j, g in enumerate(("active", "light")):
        if g in rep.importance:
            ax2.bar(
                x + (j - 0.5) * 0.4,
                [rep.importance[g][n] * 100 for n in names],
                0.4,
                label=f"{g} users (n={rep.n_users[g]})",
            )
    ax2.set_xticks(x, names, rotation=55, ha="right", fontsize=8)
    ax2.set_ylabel("relative importance (%)")
    ax2.legend(fontsize=8)
    ax2.set_title("how the signals' weight differs between active and light users")
    rows = []
    for n in names:
        row = {"signal": n, "family": FEATURE_GROUPS[n], "what it measures": DESCRIPTIONS[n], "importance (all) %": rep.importance["all"][n] * 100,
               "mean effect on score": rep.direction[n]}  # fmt: skip
        for g in ("active", "light"):
            if g in rep.importance:
                row[f"{g} %"] = rep.importance[g][n] * 100
        rows.append(row)
    main = ", ".join(f"{n} ({s * 100:.0f}%)" for n, s in rep.main_parameters())
    intro = (f"<p>Surface <b>{html.escape(rep.surface)}</b>, model <code>{html.escape(rec.version)}</code>. Films are first retrieved by a collaborative-filtering model "
             f"(ALS on who watched what) and then ordered by a learned ranker over the named signals below. The main parameters, by their share of the ranker's decisions "
             f"over the top {rep.k} films shown to {rep.n_users['all']} sampled users, are: <b>{html.escape(main)}</b>.</p>")  # fmt: skip
    options = ("<p>A user with no history, or who asks for a non-personalised feed, gets the <b>non-profiled option</b>: the most popular films of the last year, "
               "ranked without any personal signal (the cold-start path, <code>recommend(user_id=None)</code>). The personal signals use only the user's own ratings and tags.</p>")  # fmt: skip
    sections = [
        (
            "Main parameters and their relative importance",
            figure(fig, "signal families") + table(rows),
        ),
        (
            "Differences across user groups",
            "<p>Active users rated more than the median number of films; light users did not.</p>"
            + figure(fig2, "groups"),
        ),
        ("Options for users", options),
    ]
    if bundle is not None:
        rules = [
            {"rule": r.id, "action": str(r.action), "when": r.when.strip(), "reason": r.reason}
            for r in bundle.rules_for(rep.surface)
        ]
        sections.append(
            (
                f"Safety rules applied after ranking (bundle {bundle.name} {bundle.version}, {bundle.short_hash})",
                table(rules),
            )
        )
    return page(f"Transparency report: {rep.surface}", intro, sections)


def write_transparency(
    rep: Transparency, rec: Recommender, out: Path | str, bundle: Any | None = None
) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(transparency_html(rep, rec, bundle), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(rep.to_dict(), indent=2), encoding="utf-8")
    return out
