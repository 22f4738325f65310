"""Ed25519 signatures over a bundle's content hash.

The signature travels beside the bundle: ``<file>.sig`` for a one-file bundle, ``bundle.sig``
inside a folder bundle. It is JSON: ``{"alg": "ed25519", "bundle": name, "bundle_hash": hex,
"key_id": hex, "signature": base64}``. Keys are PEM files (or raw 32-byte keys in base64).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from assay.errors import BadInput, Location
from assay.files import FileRefused, read_regular
from assay.policy.source import PolicyError, read_bounded


def signature_path(bundle_path: Path) -> Path:
    return bundle_path / "bundle.sig" if bundle_path.is_dir() else bundle_path.with_name(bundle_path.name + ".sig")


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair as PEM files; returns the key id."""
    key = Ed25519PrivateKey.generate()
    private_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private_path.chmod(0o600)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_id(key.public_key())


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


KEY_FILE_LIMIT = 64 << 10  # a PEM key is a few hundred bytes


def _key_bytes(path: Path, what: str) -> bytes:
    """A key file's bytes: a regular file of at most 64 KiB (``assay.files.read_regular``: a FIFO
    or /dev/zero is refused at once, never read)."""
    try:
        return read_regular(path, KEY_FILE_LIMIT)
    except FileRefused as e:
        raise BadInput(f"{what} {path}: {e.message}") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    data = _key_bytes(Path(path), "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        try:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.strip(), validate=True))
        except Exception as e:
            raise BadInput(f"{path}: not an Ed25519 private key (PEM or base64 raw)") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"{path}: the key is not an Ed25519 key")
    return key


def load_public_key(key: Any) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    path = Path(key)
    data = _key_bytes(path, "public key")
    try:
        pub = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
        except Exception as e:
            raise BadInput(f"{path}: not an Ed25519 public key (PEM or base64 raw)") from e
    if not isinstance(pub, Ed25519PublicKey):
        raise BadInput(f"{path}: the key is not an Ed25519 key")
    return pub


def sign_bundle(bundle, private_key_path: str | Path) -> Path:
    key = load_private_key(private_key_path)
    sig = key.sign(bytes.fromhex(bundle.hash))
    doc = {
        "alg": "ed25519",
        "bundle": bundle.name,
        "bundle_hash": bundle.hash,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(sig).decode(),
    }
    out = signature_path(bundle.path)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out


def check_signature(bundle, *, required: bool, public_key: Any = None) -> dict | None:
    """Refuse an unsigned bundle that must be signed, and any whose content no longer matches
    its signature. Returns the signature document when one was verified."""
    path = signature_path(bundle.path)
    where = Location(str(path), 1, 1)
    # a trusted key that was given is read even when there is nothing to verify yet: a wrong
    # --pubkey or ASSAY_POLICY_PUBKEY is a mistake to name now, not at the first signed bundle
    pub = load_public_key(public_key) if public_key is not None else None
    if not path.exists():
        if required:
            raise PolicyError(
                "bundle must be signed but has no signature",
                Location(str(bundle.files[0]), 1, 1),
                hint=f"sign it with `assay policy sign {bundle.path} --key KEY` (writes {path.name})",
            )
        return None
    if pub is None:
        if required:
            raise PolicyError("bundle must be signed but no public key was given to verify it", where,
                              hint="pass --pubkey or set ASSAY_POLICY_PUBKEY")
        return None
    try:
        doc = json.loads(read_bounded(path, KEY_FILE_LIMIT, what="signature file").decode())
        sig = base64.b64decode(doc["signature"], validate=True)
        signed_hash = doc["bundle_hash"]
    except KeyError as e:
        raise PolicyError(f"malformed signature file: it has no {e}", where) from None
    except (OSError, ValueError, TypeError, RecursionError) as e:
        raise PolicyError(f"malformed signature file: {str(e).split(';')[0][:200]}", where) from None
    if doc.get("key_id") != key_id(pub):
        raise PolicyError(f"signature was made with key {doc.get('key_id')}, not with the trusted key {key_id(pub)}", where)
    if signed_hash != bundle.hash:
        raise PolicyError(
            f"bundle content does not match its signature (signed {str(signed_hash)[:12]}, content is {bundle.short_hash}): it was changed after signing",
            where,
        )
    try:
        pub.verify(sig, bytes.fromhex(bundle.hash))
    except (InvalidSignature, ValueError):
        raise PolicyError("signature is not valid for this bundle and key (forged or corrupted)", where) from None
    return doc
