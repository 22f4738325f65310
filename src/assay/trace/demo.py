"""Demo step: put the guard's decisions in the tamper-evident trace, explain one, prove it to a
third party, catch a tampered copy, and erase a data subject without breaking the proofs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from assay.records import Decision, Event

TITLE = "Trace: a tamper-evident, queryable log of every decision"


def _guard_records(path: Path, limit: int) -> list[Decision | Event]:
    records: list[Decision | Event] = []
    with path.open() as f:
        for line in f:
            if len(records) >= limit:
                break
            row = json.loads(line)
            if "kind" in row:
                records.append(Event(**row))
            else:
                for key in ("rule_ids", "reasons", "shadow_rule_ids", "model_versions"):
                    row[key] = tuple(row.get(key) or ())
                records.append(Decision(**row))
    return records


def _interesting(records: list) -> Decision:
    """The decision worth asking "why?" about: a rule that acted for a minor first (the question
    the trace exists to answer), then any rule that acted, then the first decision."""
    decisions = [r for r in records if isinstance(r, Decision)]
    acted = [d for d in decisions if d.rule_ids and d.action != "allow"]
    minors = [d for d in acted if any(r.startswith("teen-") for r in d.rule_ids)]
    return (minors or acted or decisions)[0]


def step(ctx) -> None:
    # a demo step may join parts: the trace with govern's lineage of each model
    from assay.govern.lineage import registry_resolver
    from assay.trace import TraceLog, proofs
    from assay.trace.bench import synthetic_decisions
    from assay.trace.checkpoint import Verifier
    from assay.trace.query import why

    root = ctx.settings.home / "trace"
    limit = 2_000 if ctx.quick else 50_000
    guard_file = Path(ctx.state.get("guard", {}).get("decisions", ""))
    with TraceLog.open(root) as log:
        if guard_file.is_file():
            records = _guard_records(guard_file, limit)
            result = log.append(records)
            source = f"the guard's {len(records)} decisions and events"
            decision = _interesting(records)
            item, subject = decision.item_id, decision.subject_id
        else:
            table = synthetic_decisions(limit, start=log.size)
            result = log.append_table(table)
            source = f"{limit} decisions"
            item, subject = table.column("item_id")[7].as_py(), table.column("subject_id")[7].as_py()
        ctx.say(f"appended {source} in {result.seconds * 1000:.0f} ms: durable (fsync), Merkle root "
                f"{result.root_hash[:16]}..., signed checkpoint at size {result.checkpoint_size}")
        report = log.verify()
        ctx.say(f"verify: {'OK' if report.ok else 'FAILED'} - {report.records} records recomputed from RFC 8785 JSON "
                f"against {report.checkpoints} Ed25519-signed checkpoints in {report.seconds:.2f}s")

        answer = why(log, item, subject, lineage=registry_resolver())
        rules = ", ".join(f"{r['id']} ({r['reason']})" for r in answer["rules"]) or "no rule fired"
        from assay.policy.actions import explain

        ctx.say(f"why was {item} {explain(answer['action'])} for that user? rank {answer['rank_before']} -> {answer['rank_after']}; "
                f"{rules}; bundle {answer['bundle_version'] or answer['bundle_hash'][:12]}; breaker {answer['breaker_state']}")
        for model in answer["models"]:
            ctx.say(f"which model, trained on which data? {model['version']} is {model['model']}, trained on "
                    f"{', '.join(model['training_data'])}" if not model["missing"]
                    else f"which model, trained on which data? {model['version']}: lineage incomplete: {model['missing']}")
        vkey = log.verifier.vkey()
        bundle = json.loads(json.dumps(answer["proof"]))
        ctx.say("an auditor checks that decision with only the public key: "
                + proofs.check_bundle(bundle, Verifier.parse(vkey)))
        by_rule = log.aggregate(by=["rule"])[:3]
        ctx.say("decisions by rule (DuckDB over the segments): "
                + ", ".join(f"{r['rule'] or '(none)'}: {r['decisions']}" for r in by_rule))

        copy = ctx.settings.home / "trace-tampered"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".writer.lock"))
        segment = sorted((copy / "segments").glob("*.arrows"))[-1]
        data = bytearray(segment.read_bytes())
        data[len(data) // 2] ^= 0x01
        segment.write_bytes(bytes(data))
        with TraceLog.open(copy, read_only=True) as tampered:
            bad = tampered.verify()
        ctx.say(f"one flipped bit in a copy: verify {'FAILED' if not bad.ok else 'missed it'} - {bad.problems[0] if bad.problems else ''}")
        shutil.rmtree(copy, ignore_errors=True)

        erased = log.erase(subject, "demo: data subject request")
        after = log.verify()
        ctx.say(f"erased {erased['erased']} records of that user (payload gone, hashes kept); recorded as event "
                f"#{erased['event_index']}; verify still {'OK' if after.ok else 'FAILED'} and old proofs still check: "
                + proofs.check_bundle(bundle, Verifier.parse(vkey)).split(":")[0])
    ctx.state["trace"] = {"path": str(root), "verifier_key": vkey}
