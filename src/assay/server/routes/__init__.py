"""Routers of the control plane. Each module exposes ``router`` (a FastAPI ``APIRouter``);
``assay.server.app.ROUTE_MODULES`` lists the ones it mounts, skipping any not installed yet."""
