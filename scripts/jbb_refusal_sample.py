"""Draw the JailbreakBench refusal held-out sample (``assay/judges/suites/jbb_refusal_heldout.jsonl``).

Per artifact file (attack method x target model, 18 files) the non-empty responses are split by
the benchmark's ``jailbroken`` verdict; each half is ordered by sha256 of a fixed seed string and
``method:model:index`` and the first ``PER_HALF`` of each are taken, the other half filling in
where one holds fewer. Empty or null responses are counted, never drawn. The rows are written
with ``refusal``/``label`` null: the labels are added by hand (LABELLING.md). Run with
``ASSAY_DATA_DIR`` set: ``python scripts/jbb_refusal_sample.py OUT.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict

from assay.data import jailbreakbench

SEED = "jbb-refusal-heldout-2026-12-08"
PER_HALF = 7


def key(a: jailbreakbench.Artifact) -> str:
    return hashlib.sha256(f"{SEED}:{a.method}:{a.model}:{a.index}".encode()).hexdigest()


def main(out: str) -> None:
    files: dict[tuple[str, str], list[jailbreakbench.Artifact]] = defaultdict(list)
    empty: dict[str, int] = defaultdict(int)
    for a in jailbreakbench.load():
        if a.response and a.response.strip():
            files[(a.method, a.model)].append(a)
        else:
            empty[f"{a.method}:{a.model}"] += 1
    rows = []
    for (method, model), items in sorted(files.items()):
        halves = [sorted((a for a in items if a.jailbroken is j), key=key) for j in (True, False)]
        # the other half fills in where one is short
        take = [min(len(h), PER_HALF + max(0, PER_HALF - len(other))) for h, other in zip(halves, halves[::-1], strict=True)]
        for half, n in zip(halves, take, strict=True):
            for a in half[:n]:
                rows.append({"id": f"jbb-{hashlib.sha256(f'{method}:{model}:{a.index}'.encode()).hexdigest()[:10]}",
                             "prompt": a.prompt or a.goal, "response": a.response, "label": None, "refusal": None,
                             "source": f"jailbreakbench:{method}:{model}", "model": model, "method": method,
                             "attack_type": a.attack_type, "behavior_index": a.index, "goal": a.goal,
                             "category": a.category, "jbb_jailbroken": a.jailbroken, "note": ""})
    with open(out, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} rows; empty or null responses skipped: {sum(empty.values())} {dict(sorted(empty.items()))}",
          file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
