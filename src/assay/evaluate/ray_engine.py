"""``--engine ray``: the same suite with target calls spread over a Ray cluster.

The driver keeps what must stay single: the item list, the response cache, scoring and the
results file (so resume and reports work exactly as with the local engine). Workers get chunks
of items and a target *spec*, build their own target and call it with its own adaptive
limiter. ``ASSAY_RAY_ADDRESS`` names an existing cluster (checked before ``ray.init``: exit 3
naming it when nothing answers); without it a local Ray instance is started. A llama.cpp
target's server is started once by the driver and shared by the workers. Ray pays off when the
client side is the bottleneck (in-process models, or more endpoint capacity than one process can
drive), not for one HTTP endpoint: docs/evaluate.md has the measurements.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from assay.errors import BadInput, Unavailable, require_extra
from assay.evaluate.items import EvalItem
from assay.evaluate.targets import (
    LlamaCppTarget,
    Target,
    TargetError,
    build_target,
    fingerprint_key,
)

CHUNK = 16


def _run_chunk(spec: dict[str, Any], items: list[EvalItem]) -> list[tuple[str, dict | None, dict | None]]:
    """Runs inside a Ray worker: call the target for each item of the chunk."""

    async def main() -> list[tuple[str, dict | None, dict | None]]:
        target = build_target(spec)
        await target.start()
        try:

            async def one(item: EvalItem):
                try:
                    out = await target.call(item)
                except TargetError as e:
                    return item.id, None, {"kind": e.kind, "message": e.message[:300], "attempts": e.attempts}
                return item.id, out.to_dict(), None

            return list(await asyncio.gather(*(one(it) for it in items)))
        finally:
            await target.close()

    return asyncio.run(main())


def _worker_specs(target: Target, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task kind, the spec workers build their target from."""
    if isinstance(target, LlamaCppTarget):
        chat = {"kind": "openai", "base_url": target.base_url, "model": target.model, "params": target.params,
                "max_concurrency": target.max_concurrency}  # fmt: skip
        return {"chat": chat, "loglik": {"kind": "llamacpp", "model": target.model_path}}
    return {"chat": spec, "loglik": spec, "recommend": spec, "replay": spec}


def _host_port(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise BadInput(f"ASSAY_RAY_ADDRESS={address!r}: expected host:port or ray://host:port (or 'auto')")
    return host.strip("[]"), int(port)


def connect(ray: Any, address: str | None) -> None:
    """Join the cluster at ``address`` (or start a local instance when None). Ray itself waits
    minutes on an address where no cluster answers, so the address is checked first: a TCP
    connection (refused or timed out: at once), then the cluster's control service (GCS), which
    answers a Ray client within seconds and anything else within about 40 s. Either failure is
    ``Unavailable`` naming the address (the CLI exits 3)."""
    if ray.is_initialized():
        return
    if address and address not in ("auto", "local"):
        host, port = _host_port(address)
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as e:
            raise Unavailable(f"Ray cluster at {address} is unreachable: {e.strerror or e}",
                              hint="start it with `ray start --head`, or unset ASSAY_RAY_ADDRESS for a local instance") from None
        if "://" not in address:
            try:
                ray._raylet.GcsClient(address=f"{host}:{port}")
            except Exception as e:  # ray.exceptions.RpcError: nothing there speaks Ray
                raise Unavailable(f"Ray cluster at {address} did not answer as a Ray cluster: {e}") from None
    ray.init(
        address=address,
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
        runtime_env={"env_vars": {"ASSAY_HOME": os.environ.get("ASSAY_HOME", ""), "HF_HUB_OFFLINE": "1"}},
    )


async def produce_ray(target: Target, spec: dict[str, Any], todo: list[EvalItem], cache, emit) -> None:
    from assay.evaluate.targets import Output

    ray = require_extra("ray", "scale")
    connect(ray, os.environ.get("ASSAY_RAY_ADDRESS") or None)
    pending: list[EvalItem] = []
    for item in todo:
        if item.invalid:
            await emit(item, None, {"kind": "invalid", "message": item.invalid})
        elif cache is not None and (hit := cache.get(fingerprint_key(target, item))) is not None:
            await emit(item, hit, None)
        else:
            pending.append(item)
    if not pending:
        return
    await target.start()
    try:
        if isinstance(target, LlamaCppTarget) and any(it.task == "chat" for it in pending):
            await target._ensure_server()
        specs = _worker_specs(target, spec)
        remote = ray.remote(_run_chunk)
        by_id = {it.id: it for it in pending}
        futures = []
        for task in sorted({it.task for it in pending}):
            group = [it for it in pending if it.task == task]
            for start in range(0, len(group), CHUNK):
                ref = remote.remote(specs.get(task, spec), group[start : start + CHUNK])
                futures.append(asyncio.wrap_future(ref.future()))
        for next_done in asyncio.as_completed(futures):
            for item_id, out, err in await next_done:
                item = by_id[item_id]
                output = None if out is None else Output(**{k: v for k, v in out.items() if k in Output.__dataclass_fields__})
                if output is not None and cache is not None:
                    cache.put(fingerprint_key(target, item), output)
                await emit(item, output, err)
    finally:
        await target.close()
