"""assay's HTTP control plane (FastAPI): ``create_app()`` in ``assay.server.app``."""
