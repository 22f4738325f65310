"""The batch hasher (C, ``assay.trace._native``) equals its oracles byte for byte: hashlib for
SHA-256, ``hmac`` for pseudonyms, the RFC 9162 functions of ``merkle`` for leaves and nodes, and the
``rfc8785`` library for each decision's canonical JSON; and so do the log's record hashes, leaves
and tree nodes built from it."""

from __future__ import annotations

import hashlib
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.trace import bench, canonical, hashing, merkle
from assay.trace.tree import TreeFile

values = st.lists(st.binary(max_size=300), min_size=0, max_size=40)


@settings(max_examples=60, deadline=None)
@given(values, st.lists(st.binary(max_size=8), min_size=1, max_size=4), st.integers(0, 5))
def test_rows_equal_hashlib(column: list[bytes], constants: list[bytes], cut: int) -> None:
    arr = pa.array(column, pa.binary())
    arr = arr.slice(min(cut, len(arr)))  # a slice has a non-zero offset into the buffers
    second = pc.binary_reverse(arr)
    n = len(arr)
    pieces = [constants[0], arr, *constants[1:], second]
    want = b"".join(hashlib.sha256(constants[0] + a + b"".join(constants[1:]) + b).digest()
                    for a, b in zip(arr.to_pylist(), second.to_pylist(), strict=True))
    assert hashing.sha256_rows(pieces, n) == want
    assert hashing.sha256_each(arr) == b"".join(hashlib.sha256(v).digest() for v in arr.to_pylist())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=70))
def test_leaf_and_node_hashes_equal_rfc9162(hashes: list[bytes]) -> None:
    data = b"".join(hashes)
    assert hashing.leaf_hashes(data) == b"".join(merkle.leaf_hash(h) for h in hashes)
    pairs = data[: len(data) // 64 * 64]
    want = b"".join(merkle.node_hash(pairs[i : i + 32], pairs[i + 32 : i + 64]) for i in range(0, len(pairs), 64))
    assert hashing.node_hashes(pairs) == want


def test_large_batches_split_over_threads_give_the_same_hashes() -> None:
    n = hashing.PARALLEL_MIN + 17
    rng = np.random.default_rng(1)
    record_hashes = rng.integers(0, 256, n * 32, dtype=np.uint8).tobytes()
    leaves = hashing.leaf_hashes(record_hashes)
    for i in (0, 1, n // 2, n - 1):
        assert leaves[32 * i : 32 * i + 32] == merkle.leaf_hash(record_hashes[32 * i : 32 * i + 32])
    table = bench.synthetic_decisions(canonical.PARALLEL_MIN_ROWS + 11)
    parallel = canonical.decision_hashes(table, workers=3)
    text = canonical.canonical_decisions(table, workers=1)
    assert parallel == canonical.decision_hashes(table, workers=1)
    for i in (0, 7, len(text) - 1):
        assert parallel[32 * i : 32 * i + 32] == hashlib.sha256(text[i].as_py().encode()).digest()


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        hashing.leaf_hashes(b"x" * 33)
    with pytest.raises(ValueError):
        hashing.node_hashes(b"x" * 65)
    with pytest.raises(ValueError):
        hashing.sha256_rows(["{", pa.array(["a", None])], 2)
    from assay.trace import _native

    with pytest.raises(ValueError, match="offsets"):
        _native.sha256_rows([(np.array([0, 5, 2], np.int32).tobytes(), b"hello", 0)], 2)
    with pytest.raises(ValueError, match="outside"):
        _native.sha256_rows([(np.array([0, 9], np.int32).tobytes(), b"hello", 0)], 1)


@pytest.mark.parametrize("chunks", [[1], [5, 3, 8, 1], [7, 9, 16, 33, 2], [64, 1, 63]])
def test_tree_appended_in_chunks_equals_the_reference(tmp_path, chunks: list[int]) -> None:
    rng = np.random.default_rng(len(chunks))
    leaves = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(sum(chunks))]
    tree = TreeFile(tmp_path / "tree.bin", fsync=False)
    done = 0
    for size in chunks:
        tree.append(b"".join(leaves[done : done + size]))
        done += size
        assert merkle.root_hash(tree, done) == merkle.root_from_leaves(leaves[:done])
    reference = merkle.ListNodes(leaves)
    for level, row in enumerate(reference.levels):
        for index, node in enumerate(row):
            assert tree.node(level, index) == node
    tree.close()


def test_threads_setting_writes_the_same_bytes_and_verifies_the_same(tmp_path, monkeypatch) -> None:
    # Batches large enough for every parallel path (slices, split hashing, the segment and the tree
    # written side by side) and a small one, over two segments; threads=1 runs none of them.
    from assay.trace import TraceLog
    from assay.trace.log import OVERLAP_MIN_ROWS

    sizes = [max(canonical.PARALLEL_MIN_ROWS, hashing.PARALLEL_MIN, OVERLAP_MIN_ROWS) + 5, 10_000, 3, 20_000]
    tables, start = [], 0
    for n in sizes:
        tables.append(bench.synthetic_decisions(n, start=start))
        start += n
    roots = {}
    for threads in (1, 3):
        with TraceLog.open(tmp_path / f"t{threads}", threads=threads, segment_records=sizes[0] + 1) as log:
            assert log.threads == threads
            for table in tables:
                log.append_table(table)
            roots[threads] = log.root_hash()
    assert roots[1] == roots[3]
    one, three = tmp_path / "t1", tmp_path / "t3"
    segments = sorted(p.name for p in (one / "segments").iterdir())
    assert len(segments) == 2 and segments == sorted(p.name for p in (three / "segments").iterdir())
    for name in segments:
        assert (one / "segments" / name).read_bytes() == (three / "segments" / name).read_bytes()
    assert (one / "tree.bin").read_bytes() == (three / "tree.bin").read_bytes()
    manifests = sorted(p.name for p in (one / "checkpoints").glob("*.manifest.json"))
    assert len(manifests) == len(sizes)
    for name in manifests:
        assert (one / "checkpoints" / name).read_bytes() == (three / "checkpoints" / name).read_bytes()

    # verify gives the same answer on any thread count, on the log and on a damaged copy
    path = three / "segments" / segments[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    for root, ok in ((one, True), (three, False)):
        reports = []
        for threads in (1, 3):
            with TraceLog.open(root, read_only=True, threads=threads) as reader:
                reports.append(reader.verify())
        assert reports[0].ok is ok and reports[1].ok is ok
        assert reports[0].problems == reports[1].problems and reports[0].records == reports[1].records

    monkeypatch.setenv(hashing.THREADS_ENV, "1")
    assert hashing.workers() == 1
    monkeypatch.setenv(hashing.THREADS_ENV, "x")
    with pytest.raises(ValueError, match=hashing.THREADS_ENV):
        hashing.workers()


def test_parallel_map_keeps_order_and_limits_threads() -> None:
    import threading

    seen: set[int] = set()

    def work(x: int) -> int:
        seen.add(threading.get_ident())
        return x * x

    assert hashing.parallel_map(work, range(23), 3) == [x * x for x in range(23)]
    assert 1 <= len(seen) <= 3
    seen.clear()
    assert hashing.parallel_map(work, range(5), 1) == [x * x for x in range(5)]
    assert seen == {threading.get_ident()}


def test_bad_row_in_a_large_batch_leaves_the_segment_as_it_was(tmp_path) -> None:
    # Large local batches are written while their record hashes are computed (log._write_early):
    # a row that cannot be canonicalised is found after most bytes are on disk; they are cut back.
    from assay.errors import BadInput
    from assay.trace import TraceLog
    from assay.trace.log import OVERLAP_MIN_ROWS

    good = bench.synthetic_decisions(OVERLAP_MIN_ROWS + 3)
    n = max(OVERLAP_MIN_ROWS, canonical.PARALLEL_MIN_ROWS) + 3  # more than one slice: the row is named in the batch
    bad = bench.synthetic_decisions(n, start=good.num_rows)
    scores = bad.column("score_after").to_numpy().copy()
    scores[n - 2] = np.inf
    bad = bad.set_column(bad.schema.get_field_index("score_after"), "score_after", pa.array(scores))
    with TraceLog.open(tmp_path / "log", threads=2) as log:
        log.append_table(good)
        segment = tmp_path / "log" / "segments" / log.segment_names()[0]
        before = segment.read_bytes()
        tree_before = (tmp_path / "log" / "tree.bin").read_bytes()
        with pytest.raises(BadInput, match=f"decision row {n - 2}: score_after is inf"):
            log.append_table(bad)
        assert segment.read_bytes() == before and (tmp_path / "log" / "tree.bin").read_bytes() == tree_before
        assert log.size == good.num_rows
        log.append_table(good.slice(0, 5))
        assert log.verify().ok
    with TraceLog.open(tmp_path / "log") as reopened:
        assert not reopened.recovery and not reopened.problems and reopened.size == good.num_rows + 5


# ---------------------------------------------------------------- RFC 8785 rows written natively

# Strings that exercise escaping: quotes, backslashes, every kind of control character, UTF-8,
# and lengths across the 16-byte chunks the native copy works in.
tricky = st.text(alphabet=st.sampled_from(['"', "\\", "\b", "\t", "\n", "\f", "\r", "\x00", "\x1f", "\x7f",
                                           "é", "€", "𝄞", "a", "Z", " ", "/"]), max_size=40)


@pytest.fixture(params=[True, False], ids=["sha-ni", "openssl"])
def sha_path(request):
    """Run a test on both SHA-256 paths of the extension (SHA-NI two at a time, and OpenSSL)."""
    from assay.trace import _native

    if request.param and not _native.SHA_NI:
        pytest.skip("this CPU has no SHA extensions")
    saved = _native.accelerated(request.param)
    yield request.param
    _native.accelerated(saved)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=0, max_size=9))
def test_both_sha_paths_equal_hashlib(messages: list[bytes]) -> None:
    # Every length around the 55/56/64-byte padding boundaries is reached by max_size=200.
    from assay.trace import _native

    arr = pa.array(messages, pa.binary())
    want = b"".join(hashlib.sha256(m).digest() for m in messages)
    saved = _native.accelerated()
    try:
        for flag in (True, False):
            _native.accelerated(flag)
            assert hashing.sha256_each(arr, 1) == want
    finally:
        _native.accelerated(saved)


@pytest.mark.parametrize("length", [0, 1, 54, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000])
def test_padding_boundaries(sha_path, length: int) -> None:
    rng = np.random.default_rng(length)
    messages = [rng.integers(0, 256, length + k % 2, dtype=np.uint8).tobytes() for k in range(5)]
    arr = pa.array(messages, pa.binary())
    assert hashing.sha256_each(arr, 1) == b"".join(hashlib.sha256(m).digest() for m in messages)
    leaves = rng.integers(0, 256, 32 * 7, dtype=np.uint8).tobytes()
    assert hashing.leaf_hashes(leaves, 1) == b"".join(merkle.leaf_hash(leaves[i : i + 32]) for i in range(0, len(leaves), 32))
    assert hashing.node_hashes(leaves[:192], 1) == b"".join(
        merkle.node_hash(leaves[i : i + 32], leaves[i + 32 : i + 64]) for i in range(0, 192, 64))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(tricky, tricky, st.lists(tricky, max_size=3), st.integers(-(2**53) + 1, 2**53 - 1)),
                min_size=1, max_size=12), st.integers(0, 3))
def test_native_rows_equal_the_reference(rows, cut: int) -> None:
    table = bench.synthetic_decisions(len(rows) + cut)
    # Tricky strings in string, list and integer columns; a slice (non-zero offsets) when cut > 0.
    columns = {"item_id": pa.array(["pad"] * cut + [r[0] for r in rows]),
               "bundle_version": pa.array(["pad"] * cut + [r[1] for r in rows]),
               "rule_ids": pa.array([[]] * cut + [r[2] for r in rows], canonical.STRING_LIST),
               "rank_before": pa.array([0] * cut + [r[3] for r in rows], pa.int64())}
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    table = table.slice(cut)
    native = canonical.decision_hashes(table, 1)
    text = canonical.canonical_decisions(table, workers=1).to_pylist()
    for i, row in enumerate(table.to_pylist()):
        want = canonical.jcs(canonical.decision_dict(row))
        assert text[i].encode() == want
        assert native[32 * i : 32 * i + 32] == hashlib.sha256(want).digest()


def test_native_rows_write_nulls_as_the_reference_does() -> None:
    # Appends never hold nulls in required columns (normalise refuses them), but verify hashes
    # whatever a segment holds: a null must give the reference's JSON (null; a null list: []).
    table = bench.synthetic_decisions(6)
    nulls = {"request_id": pa.array(["r", None, "r", "r", "r", "r"]),
             "rank_after": pa.array([1, 2, None, 4, 5, 6], pa.int64()),
             "reasons": pa.array([["a"], ["b"], ["c"], None, ["e", None], []], canonical.STRING_LIST),
             "score_before": pa.array([0.5, 0.5, 0.5, 0.5, None, 0.25]),
             "attribution": pa.array([None, None, None, None, None, '{"x":1}'])}
    for name, values in nulls.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    got = canonical.decision_hashes(table, 1)
    for i, row in enumerate(table.to_pylist()):
        assert got[32 * i : 32 * i + 32] == hashlib.sha256(canonical.jcs(canonical.decision_dict(row))).digest()


def test_json_rows_refuses_bad_parts() -> None:
    from assay.trace import _native

    strings = pa.array(["ab", "c"])
    with pytest.raises(ValueError, match="no text for null"):
        _native.json_rows([hashing.string_part(pa.array(["a", None]), quoted=True, null=None)], 2)
    with pytest.raises(ValueError, match="too short"):
        _native.json_rows([hashing.string_part(strings, quoted=True)], 3)
    with pytest.raises(ValueError, match="values buffer"):
        _native.json_rows([hashing.int_part(pa.array([1, 2], pa.int64()))], 3)
    bad_lists = (3, np.array([0, 1, 9], np.int32).tobytes(), 0, None, None,
                 np.array([0, 1, 2], np.int32).tobytes(), b"ab", 0, None)
    with pytest.raises(ValueError, match="outside"):
        _native.json_rows([bad_lists], 2)
    with pytest.raises(ValueError, match="unknown kind"):
        _native.json_rows([(7,)], 1)
    assert _native.json_rows([b"{}", hashing.int_part(pa.array([5, -12], pa.int64()))], 2, True) == \
        (np.array([0, 3, 8], np.int32).tobytes(), b"{}5{}-12")


def _ecmascript(value: float) -> str:
    """Number::toString (ECMAScript, what RFC 8785 writes) from Python's shortest repr digits:
    written out here independently of the extension, for values the reference library refuses
    (integral floats beyond 2^53)."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    n = len(whole.lstrip("0")) + int(exp or 0) if whole.strip("0") else -(len(frac) - len(frac.lstrip("0"))) + int(exp or 0)
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    return sign + digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.none()
                | st.sampled_from([0.0, -0.0, 1.0, -2.0, 1e-5, 1e-6, 9.99e-7, 1e-7, 1e15, 1e16, 1.5e16, 1e21, 1e22,
                                   2.0**60, 5e-324, 1.7976931348623157e308, 1764443470.123456]),
                min_size=1, max_size=30))
def test_numbers_are_written_as_ecmascript_does(values: list[float | None]) -> None:
    from assay.trace import _native

    arr = pa.array(values, pa.float64())
    offsets, data = _native.json_rows([hashing.numbers_part(arr)], len(values), True)
    bounds = np.frombuffer(offsets, np.int32)
    got = [data[a:b].decode() for a, b in pairwise(bounds.tolist())]
    for value, text in zip(values, got, strict=True):
        if value is None:
            assert text == "null"
            continue
        if abs(value) < 2**53 or value != int(value):
            assert text == canonical.jcs(value).decode()
        assert text == _ecmascript(value)


def test_numbers_part_refuses_what_is_not_an_array_of_numbers() -> None:
    from assay.trace import _native

    for text, n in ((b"[1,2]", 3), (b"[1,2", 2), (b"1,2]", 2), (b"[]", 1)):
        with pytest.raises(ValueError, match="not a JSON array"):
            _native.json_rows([(5, text)], n)
    for text in (b"[1x]", b"[--1]", b"[1e]", b"[.]", b"[1..2]", b"[]1]"):
        with pytest.raises(ValueError, match="not a JSON number"):
            _native.json_rows([(5, text)], 1)
    assert _native.json_rows([(5, b"[]")], 0) == b""


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=16, max_size=100), st.lists(tricky, min_size=1, max_size=20), st.integers(0, 3))
def test_native_pseudonyms_equal_hmac(key: bytes, subjects: list[str], cut: int) -> None:
    # Keys longer than SHA-256's 64-byte block are hashed first (RFC 2104); sliced columns too.
    import hmac

    from assay.trace.pseudonym import Pseudonymiser

    column = pa.array(["x"] * cut + subjects).slice(cut)
    want = [hmac.new(key, s.encode(), hashlib.sha256).hexdigest()[:32] for s in subjects]
    assert Pseudonymiser(key).column(column).to_pylist() == want
    assert [Pseudonymiser(key).one(s) for s in subjects] == want


def test_appended_record_hashes_equal_the_reference(tmp_path, sha_path) -> None:
    # Append hashes the batch as stored: dictionary columns, a column holding one value folded
    # into the template as a constant. Every stored hash must still be the reference's.
    from assay.trace import TraceLog

    n = 150
    table = bench.synthetic_decisions(n)
    tricky_values = {"bundle_version": pa.array(['v"1\\\n\u0007é'] * n),  # one value, escapes
                     "surface": pa.array(["for\tyou", 'se"arch'] * (n // 2)),
                     "breaker_state": pa.array(["half-open"] * n),
                     "shadow_rule_ids": pa.array([[]] * (n - 1) + [["shadow\u0001"]], canonical.STRING_LIST)}
    for name, values in tricky_values.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    with TraceLog.open(tmp_path / "log", threads=1) as log:
        log.append_table(table)
        log.append_table(table.slice(0, 3))
        rows = log.table().to_pylist()
    assert len(rows) == n + 3
    for row in rows:
        assert row["record_hash"] == hashlib.sha256(canonical.reference_canonical(row)).digest()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.none() | tricky, max_size=4) | st.none(), min_size=1, max_size=12), st.integers(0, 3))
def test_dictionary_lists_equal_the_reference(lists, cut: int) -> None:
    # list<dictionary<string>> (how segments store rule ids, reasons, model versions), sliced,
    # with null items (JSON null) and null lists (as the reference reads them: []).
    from assay.trace.log import _encode_items

    plain = pa.array([["pad"]] * cut + lists, canonical.STRING_LIST)
    encoded = _encode_items(plain).slice(cut)
    assert encoded.type == canonical.DICTIONARY_LIST and encoded.to_pylist() == lists
    table = bench.synthetic_decisions(len(lists))
    table = table.set_column(table.schema.get_field_index("reasons"), "reasons", encoded)
    got = canonical.decision_hashes(table, 1)
    for i, row in enumerate(table.to_pylist()):
        assert got[32 * i : 32 * i + 32] == hashlib.sha256(canonical.jcs(canonical.decision_dict(row))).digest()


def test_messages_that_open_alike_hash_as_hashlib(sha_path) -> None:
    # The native hasher reuses the state after the first two blocks of messages that begin with
    # the same 128 bytes (8 openings kept): openings that differ in their last byte only, more
    # openings than are kept (evictions), and messages of exactly two blocks or less.
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, 128, dtype=np.uint8).tobytes()
    openings = [base[:127] + bytes([k]) for k in range(6)] + [bytes([k]) + base[1:] for k in range(6)]
    messages = []
    for _ in range(400):
        opening = openings[int(rng.integers(0, len(openings)))]
        messages.append(opening + rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
    messages += [base[:100], base[:119], base[:120], base + b"x" * 64]
    arr = pa.array(messages, pa.binary())
    assert hashing.sha256_each(arr, 1) == b"".join(hashlib.sha256(m).digest() for m in messages)
