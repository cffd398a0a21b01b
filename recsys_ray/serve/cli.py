"""`recsys-ray serve`: run the ingestion service on Ray Serve.

A convenience wrapper around what `serve run deploy/serve_config.yaml` does:
connect to (or start) Ray, start Serve's HTTP listener, deploy the application
built from the config, and keep serving until interrupted.
"""

from __future__ import annotations

import argparse
import time

HELP = "Run the HTTP ingestion service on Ray Serve (port 8000 by default)."
APPLICATION_NAME = "recsys-ingest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.yaml", help="RecsysConfig YAML file")
    parser.add_argument("--storage-root", metavar="URI",
                        help="local path or s3://bucket/prefix (default: RECSYS_STORAGE_ROOT or ./recsys-data)")
    parser.add_argument("--host", help="listen address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (default 8000)")
    parser.add_argument("--replicas", type=int, help="number of service replicas")
    parser.add_argument("--replica-cpus", type=float, help="CPUs reserved per replica (default 0.5)")
    parser.add_argument("--address", help="Ray cluster address (default: the running cluster, else a local one)")
    parser.add_argument("--name", default=APPLICATION_NAME, help="Serve application name")
    parser.add_argument("--no-wait", action="store_true", help="deploy and return instead of serving until Ctrl-C")


def main(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from recsys_ray.config import RecsysConfig
    from recsys_ray.serve.app import ingest_application

    cfg = RecsysConfig.load(
        args.config,
        storage={"root": args.storage_root},
        serve={"host": args.host, "port": args.port, "num_replicas": args.replicas,
               "replica_cpus": args.replica_cpus},
    )
    if args.address:
        ray.init(address=args.address)
    else:
        try:
            ray.init(address="auto")
        except ConnectionError:
            ray.init()
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(ingest_application(cfg), name=args.name, route_prefix=cfg.serve.route_prefix)
    print(f"{args.name} is serving on http://{cfg.serve.host}:{cfg.serve.port}{cfg.serve.route_prefix} "
          f"(storage root {cfg.storage.root})", flush=True)
    if args.no_wait:
        return 0
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.delete(args.name)
    return 0
