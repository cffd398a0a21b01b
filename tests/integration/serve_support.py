"""Running the ingestion service for tests: one Serve HTTP listener per test process.

Each test module deploys its own application (own storage root and settings)
under its own route prefix, so modules do not disturb each other and no fixed
port is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import pyarrow as pa

from recsys_ray.config import RecsysConfig
from recsys_ray.io import layout, storage
from tests.conftest import free_port

KEYS = {"acme": "acme-key-0123456789", "globex": "globex-key-9876543210"}


def serve_port() -> int:
    """The HTTP port of Serve on the current Ray instance, starting Serve on a free
    loopback port if it is not running (other tests may have started it already,
    or restarted Ray)."""
    from ray import serve
    from ray.serve.context import _get_global_client

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    return _get_global_client().http_config.port


@dataclass
class Service:
    """A deployed ingestion application and the storage behind it."""

    name: str
    url: str
    cfg: RecsysConfig
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def root(self) -> str:
        return self.cfg.storage.root

    @property
    def options(self) -> storage.StorageOptions:
        return storage.StorageOptions.from_config(self.cfg.storage)

    def client(self, tenant: str | None = "acme", **headers: str) -> httpx.Client:
        auth = {"Authorization": f"Bearer {KEYS[tenant]}"} if tenant else {}
        client = httpx.Client(base_url=self.url, headers={**auth, **headers}, timeout=120)
        self.clients.append(client)
        return client

    def tree(self) -> list[str]:
        """Every stored file under the root, relative to it."""
        return [entry.uri[len(self.root.rstrip("/")):] for entry in storage.list_files(self.root, self.options)]

    def rows(self, tenant: str, dataset: str, zone: str = "raw") -> pa.Table:
        directory = (layout.raw_dir if zone == "raw" else layout.quarantine_dir)(self.root, tenant, dataset)
        files = storage.list_files(directory, self.options, suffixes=(".parquet",))
        tables = [storage.read_table(f.uri, self.options) for f in files]
        return pa.concat_tables(tables) if tables else None

    def close(self) -> None:
        for client in self.clients:
            client.close()


def deploy(name: str, root: str, **sections) -> Service:
    """Deploy an ingestion application `name` at `/{name}` storing under `root`."""
    from ray import serve

    from recsys_ray.serve.app import ingest_application

    port = serve_port()
    api = {"keys": ",".join(f"{t}:{k}" for t, k in KEYS.items()), **sections.pop("api", {})}
    serve_section = {"replica_cpus": 0.1, **sections.pop("serve", {})}
    cfg = RecsysConfig.load(storage={"root": root}, api=api, serve=serve_section, **sections)
    serve.run(ingest_application(cfg), name=name, route_prefix=f"/{name}")
    return Service(name, f"http://127.0.0.1:{port}/{name}", cfg)


def undeploy(service: Service) -> None:
    from ray import serve

    service.close()
    serve.delete(service.name)
