"""The guard's trust boundary: every route but /healthz needs a control-plane API token with the
route's role (401 without, 403 below it); reload takes only a bundle from the bundle directory
signed by a configured key, refusing anything else in one line that quotes nothing of the file;
labels come from the label store, never from the request; feedback needs a role and is
rate-limited; malformed candidates are a 400 naming the field and row."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from guard_helpers import make_candidates, make_labels

from assay.errors import BadInput
from assay.govern.registry import Actor
from assay.guard import Guard, GuardConfig
from assay.guard.cli import reload_policy, token_access
from assay.guard.http import RateLimit, TokenAccess, create_app
from assay.server.auth import create_token, revoke_token
from assay.store import open_store
from assay.store.labels import InMemoryLabelStore

ADULT = {"request_id": "r1", "surface": "for_you", "user": {"id": "u1", "age": 30}, "deadline_ms": 60_000}
ROOT = Actor("root", "admin", "test")


@pytest.fixture
def keys(tmp_path):
    from assay.policy.signing import generate_keypair

    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    generate_keypair(tmp_path / "other", tmp_path / "other.pub")
    return tmp_path / "k", tmp_path / "k.pub", tmp_path / "other"


@pytest.fixture
def service(tmp_path, test_bundle, bundle_path, keys):
    from fastapi.testclient import TestClient

    store = open_store()
    tokens = {role: create_token(store, ROOT, name=f"{role}-1", role=role)["token"] for role in ("viewer", "engineer", "admin")}
    cands = make_candidates(30)
    labels = InMemoryLabelStore()
    labels.put(list(cands["id"]), make_labels(cands["id"]), "clf-1")
    guard = Guard(test_bundle, labels)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    app = create_app(guard, access=token_access(), reload=reload_policy(bundles, [keys[1]]),
                     feedback_limit=RateLimit(rate_per_s=1.0, burst=3))
    with TestClient(app) as client:
        client.tokens, client.guard, client.store, client.bundles, client.cands = tokens, guard, store, bundles, cands
        yield client
    store.close()


def auth(client, role):
    return {"Authorization": f"Bearer {client.tokens[role]}"}


def body_of(cands, **extra):
    return orjson.dumps({"request": ADULT, "candidates": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in cands.items()},
                         **extra})


def test_every_route_needs_a_token_of_its_role(service):
    body = body_of(service.cands)
    for path, content in (("/v1/guard", body), ("/v1/guard/feedback", b'{"item_id": "item-1"}'), ("/v1/guard/reload", b'{"bundle": "x"}')):
        r = service.post(path, content=content)
        assert r.status_code == 401 and "missing API token" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
        r = service.post(path, content=content, headers={"Authorization": "Bearer assay_not-a-token"})
        assert r.status_code == 401 and "invalid" in r.json()["error"]
        r = service.post(path, content=content, headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert r.status_code == 401
    assert service.get("/v1/guard/status").status_code == 401
    assert service.get("/healthz").status_code == 200  # liveness carries no data
    assert service.post("/v1/guard", content=body, headers=auth(service, "viewer")).status_code == 200
    assert service.get("/v1/guard/status", headers=auth(service, "viewer")).json()["hash"] == service.guard.bundle.hash
    r = service.post("/v1/guard/feedback", content=b'{"item_id": "item-1", "source": "ugc:a"}', headers=auth(service, "viewer"))
    assert r.status_code == 403 and "needs 'engineer'" in r.json()["error"]
    r = service.post("/v1/guard/reload", content=b'{"bundle": "x.yaml"}', headers=auth(service, "engineer"))
    assert r.status_code == 403 and "needs 'admin'" in r.json()["error"]


def test_a_revoked_token_stops_working_within_the_cache_time(service):
    clock = [0.0]
    store = service.store
    made = create_token(store, ROOT, name="ranker", role="viewer")
    from assay.server.auth import token_actor

    access = TokenAccess(lambda t: token_actor(store, t), ttl_s=10.0, clock=lambda: clock[0])
    header = f"Bearer {made['token']}"
    assert access.require(header, "viewer").name == "ranker"
    revoke_token(store, ROOT, made["id"])
    assert access.require(header, "viewer").name == "ranker"  # remembered for ttl_s
    clock[0] = 11.0
    with pytest.raises(Exception, match="invalid, revoked or expired"):
        access.require(header, "viewer")


def test_made_up_tokens_neither_evict_valid_ones_nor_grow_memory(service):
    """A probe sent made-up bearer tokens: each was remembered (as unknown) in the one cache of
    10,000 and pushed the callers' valid tokens out, so every valid request paid a store query
    again. Unknown tokens now have a bounded cache of their own."""
    import secrets

    from assay.server.auth import token_actor

    store = service.store
    made = create_token(store, ROOT, name="ranker", role="viewer")
    queries = []

    def lookup(token):
        queries.append(token)
        return token_actor(store, token)

    access = TokenAccess(lookup, max_cached=100, max_unknown_cached=50)
    header = f"Bearer {made['token']}"
    assert access.require(header, "viewer").name == "ranker" and len(queries) == 1
    for _ in range(300):
        with pytest.raises(Exception, match="invalid, revoked or expired"):
            access.require(f"Bearer assay_{secrets.token_urlsafe(32)}", "viewer")
    assert len(queries) == 301
    assert access.require(header, "viewer").name == "ranker" and len(queries) == 301  # still remembered
    assert len(access._cache) == 1 and len(access._unknown) == 50
    bad = f"Bearer assay_{secrets.token_urlsafe(32)}"
    for _ in range(3):  # the same unknown token is one query while it is remembered
        with pytest.raises(Exception, match="invalid"):
            access.require(bad, "viewer")
    assert len(queries) == 302


def test_the_token_store_down_is_a_503_not_a_500(test_bundle):
    from fastapi.testclient import TestClient

    def down(token):
        raise ConnectionError("database unreachable")

    with TestClient(create_app(Guard(test_bundle, None), access=TokenAccess(down))) as client:
        r = client.post("/v1/guard", content=b"{}", headers={"Authorization": "Bearer assay_x"})
        assert r.status_code == 503 and "token store is unavailable" in r.json()["error"]


def test_feedback_is_rate_limited_per_principal(service):
    ok = [service.post("/v1/guard/feedback", content=b'{"item_id": "item-1", "source": "ugc:a"}', headers=auth(service, "engineer"))
          for _ in range(3)]
    assert [r.status_code for r in ok] == [200, 200, 200]
    r = service.post("/v1/guard/feedback", content=b'{"item_id": "item-1", "source": "ugc:a"}', headers=auth(service, "engineer"))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # another principal has a bucket of its own
    assert service.post("/v1/guard/feedback", content=b'{"item_id": "item-2"}', headers=auth(service, "admin")).status_code == 200
    r = service.post("/v1/guard/feedback", content=b'{"item_id": "", "severe": "yes"}', headers=auth(service, "admin"))
    assert r.status_code == 400 and "item_id" in r.json()["error"]


@pytest.mark.parametrize("field", ["item_id", "source", "model_version", "surface", "creator"])
def test_a_harm_report_names_nothing_longer_than_1024_characters(test_bundle, field):
    """A probe: a report naming a 100,000-character source made a breaker of that name, kept in
    memory and listed by /v1/guard/status (up to max_breakers of them per kind, each as long as
    a 16 MiB body allows). Now a 400 naming the field, and no breaker."""
    from fastapi.testclient import TestClient

    guard = Guard(test_bundle, None)
    report = {"item_id": "item-1", "source": "ugc:a"}
    with TestClient(create_app(guard, access=None, feedback_limit=RateLimit(rate_per_s=100.0, burst=100))) as client:
        r = client.post("/v1/guard/feedback", content=orjson.dumps({**report, field: "x" * 1025}))
        assert r.status_code == 400 and field in r.json()["error"] and "1024" in r.json()["error"], r.text[:300]
        assert client.get("/v1/guard/status").json()["breakers_total"] == 0
        assert client.post("/v1/guard/feedback", content=orjson.dumps({**report, field: "x" * 1024})).status_code == 200


@pytest.mark.parametrize("field,value,words", [
    ("request_id", {"a": 1}, "must be a string"), ("request_id", "r" * 1025, "1025 characters"),
    ("model_version", ["v1"], "must be a string"), ("model_version", "m" * 5000, "5000 characters"),
    ("subject_id", 1.5, "must be a string"), ("user", {"id": {"a": 1}, "age": 30}, "user.id"),
])
def test_ids_in_a_request_are_strings_of_at_most_1024_characters(service, field, value, words):
    """A probe: a request_id of {"a": 1} was served as "{'a': 1}" (a Python repr in every decision
    record) and one of 5 MB was echoed in the slate and stored; a model_version of any length
    names a breaker. Now a 400 naming the field; a whole number is still taken as its decimal."""
    cands = service.cands
    columns = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in cands.items()}
    r = service.post("/v1/guard", content=orjson.dumps({"request": {**ADULT, field: value}, "candidates": columns}),
                     headers=auth(service, "viewer"))
    assert r.status_code == 400 and words in r.json()["error"], r.text[:300]
    name = "user.id" if field == "user" else field
    assert name in r.json()["error"]
    ok = service.post("/v1/guard", content=orjson.dumps({"request": {**ADULT, "request_id": 42, "model_version": "m" * 1024},
                                                          "candidates": columns}), headers=auth(service, "viewer"))
    assert ok.status_code == 200 and ok.json()["request_id"] == "42"


@pytest.mark.parametrize("raw,shown", [(b"1e300", "1e+300"), (b"60001", "60001"), (b"0", "0"), (b"-5", "-5"),
                                       (b'"soon"', "'soon'"), (b"true", "True")])
def test_a_deadline_is_above_0_and_at_most_a_minute(service, raw, shown):
    """A probe: deadline_ms 1e300 was accepted (no deadline at all). Now a 400 naming the field;
    60,000 (a minute) is the most, and the library refuses a 10**400 the same way (float() of it
    overflowed: a 500 for an in-process caller)."""
    columns = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in service.cands.items()}
    body = orjson.dumps({"request": {**ADULT, "deadline_ms": 1}, "candidates": columns}).replace(b'"deadline_ms":1', b'"deadline_ms":' + raw)
    r = service.post("/v1/guard", content=body, headers=auth(service, "viewer"))
    assert r.status_code == 400 and "'deadline_ms'" in r.json()["error"] and "at most 60,000" in r.json()["error"], r.text[:300]
    assert r.json()["error"].endswith(f"got {shown}")
    with pytest.raises(BadInput, match=r"'deadline_ms' must be .* got a number past 1e308"):
        service.guard.apply({**ADULT, "deadline_ms": 10**400}, service.cands)
    with pytest.raises(BadInput, match="deadline_ms must be a number above 0 and at most 60,000"):
        GuardConfig(deadline_ms=1e300)
    assert service.post("/v1/guard", content=body.replace(b'"deadline_ms":' + raw, b'"deadline_ms":60000'),
                        headers=auth(service, "viewer")).status_code == 200


def test_ids_with_nul_are_served_unchanged_as_the_trace_takes_them(service):
    """Decided after a probe sent NUL bytes in ids: the trace stores, proves and finds (why) ids
    with NUL unchanged, and its why takes any 1-1,024 characters, so the guard takes them too
    (one rule for ids in both parts) and echoes them exactly, never truncated at the NUL."""
    columns = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in service.cands.items()}
    columns["id"] = [f"{i}\x00tail" for i in columns["id"]]
    r = service.post("/v1/guard", content=orjson.dumps({"request": {**ADULT, "request_id": "r\x00q"}, "candidates": columns,
                                                       "decisions": True}), headers=auth(service, "viewer"))
    assert r.status_code == 200 and r.json()["request_id"] == "r\x00q", r.text[:300]
    decided = [d["item_id"] for d in r.json()["decisions"]]  # unlabelled here, so dropped: fail closed
    assert sorted(decided) == sorted(columns["id"]) and r.json()["candidates"] == len(columns["id"])


def sign(bundle_file, key):
    from assay.policy import load_bundle
    from assay.policy.signing import sign_bundle

    sign_bundle(load_bundle(bundle_file), key)


def test_reload_only_signed_bundles_from_the_bundle_directory(service, bundle_path, keys, tmp_path):
    private, _, other = keys
    admin = auth(service, "admin")
    before = service.guard.bundle.hash

    def reload(name):
        return service.post("/v1/guard/reload", content=orjson.dumps({"bundle": name}), headers=admin)

    secret = tmp_path / "secret.yaml"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    outside = [str(secret), "../secret.yaml", "/etc/passwd", "bundles/../../secret.yaml", "."]
    for name in outside:
        r = reload(name)
        assert r.status_code == 403 and "outside the bundle directory" in r.json()["error"], (name, r.json())
        assert "root:" not in r.text
    (service.bundles / "link.yaml").symlink_to(secret)  # a link out of the folder is outside too
    assert reload("link.yaml").status_code == 403
    assert reload("nope.yaml").status_code == 404
    # a probe: 200 characters but 400 bytes, a name the file system refuses (ENAMETOOLONG): was a 500
    r = reload("\u00e9" * 200)
    assert r.status_code == 404 and "no bundle" in r.json()["error"], r.text

    v2 = service.bundles / "v2.yaml"
    v2.write_text(bundle_path.read_text().replace('version: "1"', 'version: "2"'))
    r = reload("v2.yaml")
    assert r.status_code == 403 and "is not signed" in r.json()["error"]
    sign(v2, other)  # a key the server does not trust
    r = reload("v2.yaml")
    assert r.status_code == 403 and "not signed by a trusted key" in r.json()["error"]
    sign(v2, private)
    v2.write_text(v2.read_text().replace("item.labels.spam >= 0.9", "item.labels.spam >= 0.99"))  # changed after signing
    r = reload("v2.yaml")
    assert r.status_code == 403 and "does not verify" in r.json()["error"]
    assert service.guard.bundle.hash == before  # every refusal left the serving bundle as it was

    garbage = service.bundles / "garbage.yaml"
    garbage.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (service.bundles / "garbage.yaml.sig").write_text(orjson.dumps({"key_id": "0"}).decode())
    r = reload("garbage.yaml")
    assert r.status_code == 403 and "root" not in r.json()["error"] and "\n" not in r.json()["error"]

    v2.write_text(bundle_path.read_text().replace('version: "1"', 'version: "2"'))
    sign(v2, private)
    r = reload("v2.yaml")
    assert r.status_code == 200 and r.json()["version"] == "2"
    assert service.post("/v1/guard", content=body_of(service.cands), headers=auth(service, "viewer")).json()["bundle_version"] == "2"


def test_reload_is_off_without_a_bundle_directory_and_keys(test_bundle, tmp_path):
    from fastapi.testclient import TestClient

    from assay.errors import BadInput

    with TestClient(create_app(Guard(test_bundle, None), access=None)) as client:
        r = client.post("/v1/guard/reload", content=b'{"bundle": "x.yaml"}')
        assert r.status_code == 403 and "reload is off" in r.json()["error"]
    with pytest.raises(BadInput, match="need both --bundle-dir"):
        reload_policy(tmp_path, None)


def test_labels_come_from_the_store_not_the_request(service):
    """A caller's labels would override the store's (serving drug and gambling items to a minor):
    they are refused, naming the field and row."""
    cands = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in service.cands.items()}
    viewer = auth(service, "viewer")
    r = service.post("/v1/guard", content=orjson.dumps({"request": ADULT, "candidates": {**cands, "labels.spam": [0.0] * 30}}),
                     headers=viewer)
    assert r.status_code == 400 and "'labels.spam' is not accepted: labels come from the label store" in r.json()["error"]
    records = [{"id": "a", "score": 1.0}, {"id": "b", "score": 0.5, "labels": {"mature": 0.0}}]
    r = service.post("/v1/guard", content=orjson.dumps({"request": ADULT, "candidates": records}), headers=viewer)
    assert r.status_code == 400 and r.json()["error"].startswith("candidates[1]: 'labels' is not accepted")


@pytest.mark.parametrize(("candidates", "message"), [
    ({"id": ["a", "a"], "score": [1, 2]}, r"candidates[1]: duplicate id 'a'"),
    ({"id": ["a", ""], "score": [1, 2]}, r"candidates[1]: 'id' must be a non-empty string"),
    ({"id": ["a", "b"], "score": [1, "x"]}, r"candidates[1] (id 'b'): 'score' must be a number"),
    ({"id": ["a", "b"], "score": [1, None]}, r"candidates[1] (id 'b'): 'score' must be a number"),
    ({"id": ["a", "b"], "score": [1]}, r"column 'score' has 1 values but 'id' has 2"),
    ([{"id": "a", "score": 1}, {"id": "b"}], r"candidates[1]: missing 'score'"),
    ([{"id": "a", "score": 1}, 7], r"candidates[1]: must be an object"),
    # a probe: a 1 MB id was served, echoed and stored in every decision record, where the trace's
    # why (which takes ids of at most 1,024 characters) could never look it up
    ({"id": ["a", "b" * 1025], "score": [1, 2]}, r"candidates[1]: 'id' has 1025 characters; at most 1024"),
    ([{"id": "a", "score": 1}, {"id": "b" * 1025, "score": 2}], r"candidates[1]: 'id' has 1025 characters"),
])
def test_malformed_candidates_are_a_400_naming_the_field_and_row(service, candidates, message):
    r = service.post("/v1/guard", content=orjson.dumps({"request": ADULT, "candidates": candidates}), headers=auth(service, "viewer"))
    assert r.status_code == 400 and message in r.json()["error"], r.json()


def test_a_body_over_the_limit_is_a_413(test_bundle):
    from fastapi.testclient import TestClient

    with TestClient(create_app(Guard(test_bundle, None), access=None, max_body_bytes=1000)) as client:
        r = client.post("/v1/guard", content=b"{" + b" " * 2000 + b"}")
        assert r.status_code == 413
