"""``assay bench govern``: the lineage figures (``assay.govern.bench``: propagation over 100,000
assets, the deployment gate over a 10,000-node ancestry, each beside its naive baseline) plus the
control plane's attack figures: the standing schemathesis attack (``assay.server.attack``) run on
a SQLite store and on a fresh PostgreSQL database, with the number of calls made on each and the
5xx answers among them (the target is zero).

It lives with the server, not in ``assay.govern``, because the attack drives the HTTP app and
engines do not import the server (docs/architecture.md). PostgreSQL is found through
``ASSAY_BENCH_PG_URL`` (default: the test server ``postgresql+psycopg://postgres@127.0.0.1:5432/test``);
a fresh database is created on it and dropped afterwards. Where it cannot be reached, its
figures are null and ``detail.attack.postgres.unavailable`` says why.

Figures (``BenchResult``): the lineage figures and targets, plus ``schemathesis_calls_sqlite`` /
``schemathesis_calls_postgres`` (calls), ``schemathesis_5xx`` (answers, target <= 0) and
``schemathesis_failed_checks``.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

from assay.records import BenchResult, at_most

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def attack_figures(quick: bool = False) -> dict[str, Any]:
    """``schemathesis_5xx`` and the calls per store, with the details under ``attack``."""
    from assay.server.attack import attack_store

    limits = {"examples": 3, "scenarios": 10, "steps": 5} if quick else {"examples": 10, "scenarios": 60, "steps": 8}
    logging.getLogger("assay.server").setLevel(logging.CRITICAL)  # the attack's refusals are expected
    details: dict[str, Any] = {"limits": limits}
    figures: dict[str, Any] = {}
    for store_kind in ("sqlite", "postgres"):
        started = time.perf_counter()
        try:
            with _database(store_kind) as url:
                result = attack_store(url, **limits)
        except _Unreachable as e:
            figures[f"schemathesis_calls_{store_kind}"] = None
            details[store_kind] = {"unavailable": str(e)}
            continue
        figures[f"schemathesis_calls_{store_kind}"] = result.calls
        details[store_kind] = {**result.as_dict(), "seconds": round(time.perf_counter() - started, 1)}
    reached = [details[k] for k in ("sqlite", "postgres") if "calls" in details[k]]
    figures["schemathesis_5xx"] = sum(d["5xx"] for d in reached) if reached else None
    figures["schemathesis_failed_checks"] = sum(d["failures"] for d in reached) if reached else None
    return {"figures": figures, "attack": details}


class _Unreachable(Exception):
    pass


class _database:
    """``None`` (a fresh SQLite file) or a fresh PostgreSQL database, dropped on exit."""

    def __init__(self, kind: str):
        self.kind, self.url, self.admin, self.name = kind, None, None, None

    def __enter__(self) -> str | None:
        if self.kind == "sqlite":
            return None
        import sqlalchemy as sa

        base = os.environ.get("ASSAY_BENCH_PG_URL", PG_URL)
        try:
            self.admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
            self.name = f"assay_bench_{uuid.uuid4().hex[:10]}"
            with self.admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        except Exception as e:  # no server, no driver, no rights
            raise _Unreachable(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        return base.rsplit("/", 1)[0] + f"/{self.name}"

    def __exit__(self, *_exc) -> None:
        if self.admin is None:
            return
        import sqlalchemy as sa

        with self.admin.connect() as conn:
            conn.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'"))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}"'))
        self.admin.dispose()


def run(quick: bool = False) -> BenchResult:
    from assay.govern.bench import run as lineage

    out = lineage(quick=quick)
    attack = attack_figures(quick)
    return BenchResult(
        figures={**out.figures, **attack["figures"]},
        baseline=out.baseline,
        units={**out.units, **{k: "calls" for k in attack["figures"] if k.startswith("schemathesis_calls_")},
               "schemathesis_5xx": "answers", "schemathesis_failed_checks": "checks"},
        targets={**out.targets, "schemathesis_5xx": at_most(0)},
        measures={**out.measures,
                  "schemathesis_5xx": "5xx answers to the schemathesis attack, SQLite and PostgreSQL stores together",
                  "schemathesis_failed_checks": "schemathesis checks that failed (schema conformance, status codes), both stores"},
        detail={**out.detail, "attack": attack["attack"]},
    )
