"""``verify``: recompute the whole log from its segments and check it against every checkpoint.

Nothing the writer cached is trusted: each record's RFC 8785 JSON and SHA-256 are recomputed,
the Merkle tree is rebuilt in a scratch file, each checkpoint's signature is checked with the
given public key and its root compared with the rebuilt tree, and the newest checkpoint's segment
manifest (byte length and SHA-256 of each segment, committed to by the signed note) is compared
with the bytes on disk, so even a flipped padding byte is caught. Messages say what and where.

A log cannot show its own rollback, so verify also compares it with the trusted state it kept
from its last run (state.py): fewer records, an older newest checkpoint, a rewritten history or a
deleted checkpoint fail, naming the sizes. With witness keys, a quorum of C2SP cosignatures must
vouch for a checkpoint (witness.py). Records after the newest signed checkpoint are reported as
an unacknowledged tail (exit code 4 on the command line), not as tampering.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assay.errors import AssayError, BadInput
from assay.trace import canonical, hashing, merkle, state
from assay.trace.checkpoint import Checkpoint, SignatureError, Verifier
from assay.trace.log import (
    MANIFEST_SUFFIX,
    PENDING_ERASURE,
    TraceLog,
    VerifyReport,
    _leaf_hashes,
    read_batches,
)
from assay.trace.tree import TreeFile, nodes_for_leaves
from assay.trace.witness import CosignatureVerifier, count_cosignatures

MAX_LISTED = 5


def verify_log(log: TraceLog, verifier: Verifier, tree_dir: Path | None = None, *, state: Path | None = None,
               witnesses: Sequence[CosignatureVerifier] = (), quorum: int | None = None) -> VerifyReport:
    started = time.perf_counter()
    problems: list[str] = []
    warnings: list[str] = []
    if witnesses:
        quorum = len(witnesses) if quorum is None else quorum
        if not 1 <= quorum <= len(witnesses):
            raise BadInput(f"the quorum must be between 1 and the {len(witnesses)} witness keys given, got {quorum}")
    elif quorum is not None:
        raise BadInput("a quorum needs witness keys (--witness)")

    checkpoints: list[tuple[str, Checkpoint, str]] = []
    for name in log.checkpoint_names():
        try:
            text = log._read(f"checkpoints/{name}").decode("utf-8", "replace")
            body = verifier.verify_note(text, f"checkpoint {name}")
            checkpoint = Checkpoint.parse_body(body, f"checkpoint {name}")
            if checkpoint.origin != log.origin:
                raise SignatureError(f"checkpoint {name}: origin {checkpoint.origin!r} is not {log.origin!r}")
            if int(name[:20]) != checkpoint.size:
                raise SignatureError(f"checkpoint {name}: the file name says size {int(name[:20])} but the signed note says {checkpoint.size} (checkpoint replaced)")
            checkpoints.append((name, checkpoint, body))
        except (SignatureError, AssayError) as e:
            problems.append(str(e))

    # With more than one thread, independent work runs side by side (all of it releases the GIL):
    # the newest checkpoint's byte manifest (SHA-256 of every segment), the next segment's read
    # and full validation, and the tree over the stored record hashes, while the record hashes
    # are recomputed in slices. Same checks, same messages, in the same order.
    threads = log.threads
    side = hashing.pool("side") if threads > 1 else None
    manifest_done = side.submit(_check_manifest, log, *_newest(checkpoints)) if side and checkpoints else None
    names = log.segment_names()

    def load(name: str):
        return read_batches(log._read_segment_buffer(name), f"segment {name}")

    # What a writer acknowledged ends at the newest signed checkpoint: what follows it (complete
    # batches, a torn one) is an unacknowledged tail, not tampering, unless a checkpoint covers it.
    signed = checkpoints[-1][1].size if checkpoints else 0
    torn_bytes = 0

    with tempfile.TemporaryDirectory(dir=tree_dir) as scratch:
        tree = TreeFile(Path(scratch) / "tree.bin", fsync=False, threads=threads)
        tree_done = None
        expected = 0
        erased: list[int] = []
        erasure_covers: set[int] = set()
        locations: list[tuple[int, str]] = []  # (first index, segment name) for messages
        loading = side.submit(load, names[0]) if side and names else None
        try:
            for i, name in enumerate(names):
                first = int(name[:20])
                where = f"segment {name}"
                if loading is not None:
                    batches, _good, trailing = loading.result()
                    loading = side.submit(load, names[i + 1]) if i + 1 < len(names) else None
                else:
                    batches, _good, trailing = load(name)
                if trailing:
                    rows = sum(b.num_rows for b in batches)
                    if first + rows >= signed:
                        torn_bytes += log._read_segment_buffer(name).size - _good
                    else:
                        problems.append(trailing)
                if first != expected:
                    problems.append(f"{where} starts at index {first} but the segments before it end at {expected} "
                                    f"(a segment is missing, renamed or swapped)")
                if not batches:
                    continue
                table = pa.Table.from_batches(batches)
                locations.append((expected, name))
                n = table.num_rows
                index = table.column("index").to_numpy()
                want = np.arange(expected, expected + n, dtype=np.uint64)
                if n and int(index[0]) != first:
                    problems.append(f"{where} holds records from index {int(index[0])} but its name says {first} "
                                    f"(segments swapped or renamed)")
                elif not np.array_equal(index, want):
                    row = int(np.flatnonzero(index != want)[0])
                    problems.append(f"{where} row {row} holds index {int(index[row])} where {int(want[row])} belongs "
                                    f"(records were deleted, inserted or reordered)")
                stored = table.column("record_hash").combine_chunks()
                stored_bytes = np.frombuffer(stored.buffers()[1], np.uint8, count=n * 32, offset=stored.offset * 32).reshape(n, 32)
                # The tree over the stored hashes (checked against the signed roots below), in order.
                if tree_done is not None:
                    tree_done.result()
                if side is not None:
                    tree_done = side.submit(_append_leaves, tree, stored_bytes, threads)
                else:
                    _append_leaves(tree, stored_bytes, threads)
                kinds = table.column("type").combine_chunks()
                erased_mask = table.column("erased").combine_chunks().to_numpy(zero_copy_only=False)
                is_decision = pc.equal(kinds, "decision").to_numpy(zero_copy_only=False)
                is_event = pc.equal(kinds, "event").to_numpy(zero_copy_only=False)
                other = ~(is_decision | is_event)
                if other.any():
                    row = int(np.flatnonzero(other)[0])
                    problems.append(f"{where} row {row}: unknown record type {kinds[row].as_py()!r}")
                check = is_decision & ~erased_mask
                rows = np.flatnonzero(check)
                if len(rows):
                    decisions = table.select(canonical.DECISION_SCHEMA.names)
                    if len(rows) < n:
                        decisions = decisions.take(pa.array(rows))
                    try:
                        got = np.frombuffer(canonical.decision_hashes(decisions, threads), np.uint8).reshape(-1, 32)
                        bad = rows[np.any(got != stored_bytes[rows], axis=1)]
                    except AssayError as e:
                        problems.append(f"{where}: a decision cannot be canonicalised ({e})")
                        bad = np.array([], dtype=np.int64)
                    for row in bad[:MAX_LISTED]:
                        problems.append(f"{where} row {int(row)} (index {int(index[row])}): the decision does not match its "
                                        f"record hash (its content was altered)")
                    if len(bad) > MAX_LISTED:
                        problems.append(f"{where}: {len(bad) - MAX_LISTED} more altered decisions")
                for row in np.flatnonzero(is_event):
                    record = table.slice(int(row), 1).to_pylist()[0]
                    if record["erased"]:
                        problems.append(f"{where} row {int(row)} (index {int(index[row])}): an event is marked erased; events cannot be erased")
                        continue
                    try:
                        digest = hashlib.sha256(canonical.reference_canonical(record)).digest()
                    except (AssayError, ValueError, KeyError, TypeError) as e:
                        problems.append(f"{where} row {int(row)} (index {int(index[row])}): the event cannot be read ({e})")
                        continue
                    if digest != stored_bytes[row].tobytes():
                        problems.append(f"{where} row {int(row)} (index {int(index[row])}): the event does not match its record hash (its content was altered)")
                    elif record["kind"] == "trace.erasure":
                        import json

                        erasure_covers.update(json.loads(record["payload"]).get("indices", []))
                erased.extend(int(i) for i in index[erased_mask & is_decision])
                expected += n
        finally:
            for pending in (loading, tree_done):  # nothing runs on after the scratch tree is removed
                if pending is not None:
                    pending.exception()
        if tree_done is not None:
            tree_done.result()

        uncovered = [i for i in erased if i not in erasure_covers]
        if uncovered:
            problems.append(f"records {uncovered[:MAX_LISTED]} are marked erased but no trace.erasure event erased them")

        for name, checkpoint, _body in checkpoints:
            if checkpoint.size > expected:
                problems.append(f"checkpoint {name} covers {checkpoint.size} records but the segments hold {expected} "
                                f"(records were removed or a segment truncated)")
                continue
            if merkle.root_hash(tree, checkpoint.size) != checkpoint.root:
                where = _first_difference(log, tree, checkpoint, locations)
                problems.append(f"checkpoint {name}: the records hash to a different root than the signed one{where}")
        trusted = _check_trusted_state(log, verifier, state, checkpoints, tree, expected, problems)
        witnessed = _check_witnesses(log, checkpoints, witnesses, quorum, problems, warnings) if witnesses else None
        warnings.extend(_check_tree_cache(log, tree, expected))
        tree.close()

    if checkpoints:
        name, latest, body = _newest(checkpoints)
        problems.extend(manifest_done.result() if manifest_done else _check_manifest(log, name, latest, body))
    elif expected and log.checkpoint_names():
        problems.append(f"the log holds {expected} records but no valid signed checkpoint")
    if problems and log.fs.exists(f"{log.root}/{PENDING_ERASURE}"):
        problems.append(f"an erasure was interrupted ({PENDING_ERASURE}): a writer opening the log finishes it; "
                        f"the problems above may be its half-rewritten files")
    unacknowledged = None
    if expected > signed or torn_bytes:
        unacknowledged = {"after_size": signed, "records": max(expected - signed, 0), "torn_bytes": torn_bytes}
    if not problems and state is not None and checkpoints and (trusted is None or signed >= trusted):
        _save_trusted_state(log, state, checkpoints)
    return VerifyReport(ok=not problems, records=expected, checkpoints=len(checkpoints), erased=len(erased),
                        problems=problems, warnings=warnings, seconds=time.perf_counter() - started,
                        signed_size=signed, unacknowledged=unacknowledged, trusted_size=trusted, witnessed_size=witnessed)


def unacknowledged_message(report: VerifyReport) -> str:
    """One line for an unacknowledged tail (what the CLI prints before exiting with its code)."""
    tail = report.unacknowledged or {}
    parts = [f"{tail.get('records', 0)} records"] + ([f"{tail['torn_bytes']} bytes of a torn batch"] if tail.get("torn_bytes") else [])
    return (f"unacknowledged tail: {' and '.join(parts)} after the newest signed checkpoint (size {tail.get('after_size', 0)}) "
            f"were never acknowledged by a signed checkpoint (a writer that crashed, or one still running between "
            f"checkpoints); the signed log verifies. A writer opening the log moves them to quarantine/.")


def _check_trusted_state(log: TraceLog, verifier: Verifier, path: Path | None,
                         checkpoints: list[tuple[str, Checkpoint, str]], tree: TreeFile, expected: int,
                         problems: list[str]) -> int | None:
    """Compare the log with the newest checkpoint this verifier verified before; returns that size."""
    if path is None:
        return None
    try:
        trusted = state.load(path, verifier, log.origin)
    except (SignatureError, AssayError) as e:
        problems.append(f"{e} (delete it to trust this log afresh)")
        return None
    if trusted is None:
        return None
    size = trusted.checkpoint.size
    newest = checkpoints[-1][1].size if checkpoints else 0
    seen = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(trusted.recorded_at))
    if newest < size:
        problems.append(f"rollback: this verifier verified the log at size {size} (on {seen}, state {path}), but the "
                        f"newest checkpoint now is of size {newest} and the segments hold {expected} records "
                        f"(checkpoints were deleted or the log was rolled back)")
    if expected < size:
        problems.append(f"truncated: the segments hold {expected} records, fewer than the {size} this verifier "
                        f"verified on {seen}")
    elif merkle.root_hash(tree, size) != trusted.checkpoint.root:
        problems.append(f"history rewritten: the records up to {size} no longer hash to the root this verifier "
                        f"verified on {seen} (a checkpoint of that size signed by the log's key, state {path})")
    present = {c.size for _, c, _ in checkpoints}
    gone = [s for s in trusted.sizes if s not in present]
    if gone:
        listed = ", ".join(str(s) for s in gone[:MAX_LISTED]) + (f" and {len(gone) - MAX_LISTED} more" if len(gone) > MAX_LISTED else "")
        problems.append(f"deleted checkpoints: the checkpoints of size {listed} were in the log when this verifier "
                        f"verified it on {seen} and are gone")
    return size


def _save_trusted_state(log: TraceLog, path: Path, checkpoints: list[tuple[str, Checkpoint, str]]) -> None:
    name = checkpoints[-1][0]
    state.save(path, log._read(f"checkpoints/{name}").decode(), [c.size for _, c, _ in checkpoints])


def _check_witnesses(log: TraceLog, checkpoints: list[tuple[str, Checkpoint, str]],
                     witnesses: Sequence[CosignatureVerifier], quorum: int, problems: list[str],
                     warnings: list[str]) -> int | None:
    """The newest checkpoint with ``quorum`` valid cosignatures from distinct given witnesses.
    A cosignature from a given witness that does not verify is a problem (a forged or altered
    line); lines from other keys are ignored, as C2SP signed-note says."""
    for name, checkpoint, body in reversed(checkpoints):
        lines = log.cosignatures(checkpoint.size)
        if not lines:
            continue
        valid, bad = count_cosignatures(body, lines, witnesses, where=f"checkpoint {name}")
        problems.extend(bad)
        if len(valid) >= quorum:
            newest = checkpoints[-1][1].size
            if checkpoint.size < newest:
                warnings.append(f"records {checkpoint.size}..{newest - 1} are signed by the log but not yet witnessed "
                                f"(the newest checkpoint with {quorum} cosignatures is of size {checkpoint.size})")
            return checkpoint.size
    problems.append(f"no checkpoint carries {quorum} valid cosignatures from the {len(witnesses)} witness keys given "
                    f"(a split view cannot be ruled out; `assay trace cosign` collects them)")
    return None


def _check_tree_cache(log: TraceLog, tree: TreeFile, expected: int) -> list[str]:
    """Compare the writer's tree cache (``tree.bin``) with the tree rebuilt from the records. A
    damaged cache is not tampering with the log (nothing signed changed), but proofs made from
    it would not check: a writer rebuilds it here, a reader reports it (``prove`` checks every
    proof before serving it and rebuilds the cache itself)."""
    cache = log._tree
    if cache is tree or not log.local or cache.path != Path(log.root) / "tree.bin" or not cache.size:
        return []
    n = nodes_for_leaves(min(cache.size, expected)) * 32
    if not n or os.fstat(cache._fd).st_size < n or os.fstat(tree._fd).st_size < n:
        return []  # nothing to compare, or a cache cut short (a writer rebuilds it on open)
    position = _first_different_node(tree._fd, cache._fd, n)
    if position is None:
        return []
    if log.read_only:
        return [f"tree.bin (the writer's cache of the Merkle tree) differs from the records at node {position}: "
                f"proofs are checked against the signed root before they are served, and the cache is rebuilt "
                f"by `prove` or the next writer"]
    log._rebuild_tree()
    return [f"tree.bin (the writer's cache of the Merkle tree) differed from the records at node {position}; rebuilt"]


def _first_different_node(fd_a: int, fd_b: int, n: int) -> int | None:
    """The first 32-byte node where the first ``n`` bytes of two open files differ: both
    memory-mapped (by descriptor: the files open, not whatever the path holds now) and compared
    as 64-bit words a chunk at a time, with no copy of either."""
    import mmap

    maps = [mmap.mmap(fd, n, access=mmap.ACCESS_READ) for fd in (fd_a, fd_b)]
    a = b = left = right = None
    try:
        a, b = (np.frombuffer(m, np.uint64) for m in maps)
        step = 4 << 20
        for offset in range(0, n // 8, step):
            left, right = a[offset:offset + step], b[offset:offset + step]
            if not np.array_equal(left, right):
                return (offset + int(np.flatnonzero(left != right)[0])) * 8 // 32
        return None
    finally:
        del a, b, left, right  # the views, before their maps are closed
        for m in maps:
            m.close()


def _newest(checkpoints: list[tuple[str, Checkpoint, str]]) -> tuple[str, Checkpoint, str]:
    return checkpoints[-1]


def _append_leaves(tree: TreeFile, stored_bytes: np.ndarray, threads: int) -> None:
    tree.append(_leaf_hashes(stored_bytes, threads))


def _first_difference(log: TraceLog, tree: TreeFile, checkpoint: Checkpoint, locations: list[tuple[int, str]]) -> str:
    """Where the recomputed leaves first differ from the writer's tree, when the writer's tree
    still matches the signed root (the usual case: the segments were edited, the cache was not)."""
    cache = log._tree
    if cache.size < checkpoint.size or merkle.root_hash(cache, checkpoint.size) != checkpoint.root:
        return ""
    step = 1 << 16
    for start in range(0, checkpoint.size, step):
        end = min(checkpoint.size, start + step)
        a, b = tree.leaves(start, end), cache.leaves(start, end)
        diff = np.flatnonzero(np.any(a != b, axis=1))
        if len(diff):
            index = start + int(diff[0])
            firsts = [f for f, _ in locations]
            pos = max(int(np.searchsorted(firsts, index, side="right")) - 1, 0)
            return f"; the first record that differs from what was signed is index {index} (segment {locations[pos][1]} row {index - locations[pos][0]})"
    return ""


def _check_manifest(log: TraceLog, name: str, checkpoint: Checkpoint, body: str) -> list[str]:
    problems: list[str] = []
    committed = [line.split(" ", 1)[1] for line in body.splitlines() if line.startswith("segments ")]
    manifest_name = name.replace(".note", MANIFEST_SUFFIX)
    if not committed:
        return [f"checkpoint {name}: it commits to no segment manifest"]
    try:
        raw = log._read(f"checkpoints/{manifest_name}")
    except FileNotFoundError:
        return [f"checkpoint {name}: its segment manifest {manifest_name} is missing"]
    if hashlib.sha256(raw).hexdigest() != committed[0]:
        return [f"checkpoint {name}: segment manifest {manifest_name} is not the one the note signed (replaced)"]
    import json

    manifest = json.loads(raw)
    listed = {entry["name"] for entry in manifest["segments"]}
    for entry in manifest["segments"]:
        try:
            data = memoryview(log._read_segment_buffer(entry["name"]))  # memory-mapped locally: no copy
        except FileNotFoundError:
            problems.append(f"segment {entry['name']}: missing, but checkpoint {name} signed it")
            continue
        if len(data) < entry["bytes"]:
            problems.append(f"segment {entry['name']}: {len(data)} bytes, but checkpoint {name} signed {entry['bytes']} (truncated)")
        elif hashlib.sha256(data[: entry["bytes"]]).hexdigest() != entry["sha256"]:
            problems.append(f"segment {entry['name']}: its first {entry['bytes']} bytes differ from those signed in checkpoint {name} (the file was modified)")
    for segment in log.segment_names():
        if segment not in listed and int(segment[:20]) < checkpoint.size:
            problems.append(f"segment {segment}: not in the manifest signed by checkpoint {name} (added or renamed)")
    return problems
