"""``assay policy diff``: what changed between two bundle versions, entry by entry."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BundleDiff:
    old_hash: str
    new_hash: str
    added: dict[str, list[str]] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)
    changed: dict[str, dict[str, dict[str, tuple]]] = field(default_factory=dict)  # section -> id -> field -> (old, new)
    reordered: dict[str, bool] = field(default_factory=dict)
    attributes: dict[str, dict[str, tuple]] = field(default_factory=dict)
    meta: dict[str, tuple] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.old_hash == self.new_hash

    def to_dict(self) -> dict:
        return {
            "old_hash": self.old_hash, "new_hash": self.new_hash, "added": self.added, "removed": self.removed,
            "changed": {s: {i: {k: list(v) for k, v in f.items()} for i, f in c.items()} for s, c in self.changed.items()},
            "reordered": self.reordered, "attributes": {s: {k: list(v) for k, v in a.items()} for s, a in self.attributes.items()},
            "meta": {k: list(v) for k, v in self.meta.items()},
        }


def diff(old, new) -> BundleDiff:
    a, b = old.canonical(), new.canonical()
    out = BundleDiff(old.hash, new.hash)
    for key in ("bundle", "version", "description", "requires_signature"):
        if a[key] != b[key]:
            out.meta[key] = (a[key], b[key])
    for section in ("rules", "gates", "purposes", "alerts"):
        old_items = {d["id"]: d for d in a[section]}
        new_items = {d["id"]: d for d in b[section]}
        added = [i for i in new_items if i not in old_items]
        removed = [i for i in old_items if i not in new_items]
        if added:
            out.added[section] = added
        if removed:
            out.removed[section] = removed
        for rid in old_items.keys() & new_items.keys():
            fields = {k: (old_items[rid].get(k), new_items[rid].get(k)) for k in old_items[rid].keys() | new_items[rid].keys()
                      if old_items[rid].get(k) != new_items[rid].get(k)}
            if fields:
                out.changed.setdefault(section, {})[rid] = fields
        common_old = [i for i in old_items if i in new_items]
        common_new = [i for i in new_items if i in old_items]
        if common_old != common_new:
            out.reordered[section] = True
    for section in set(a["attributes"]) | set(b["attributes"]):
        oa, na = a["attributes"].get(section, {}), b["attributes"].get(section, {})
        changes = {k: (oa.get(k), na.get(k)) for k in oa.keys() | na.keys() if oa.get(k) != na.get(k)}
        if changes:
            out.attributes[section] = changes
    return out
