"""`recsys-ray serve`: run the ingestion service on Ray Serve.

A convenience wrapper around what `serve run deploy/serve_config.yaml` does:
connect to (or start) Ray, start Serve's HTTP listener, deploy the application
built from the config, and keep serving until SIGTERM or Ctrl-C, which delete
the application (it would outlive the command on a cluster it joined).
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
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a new local "
                                          "Ray of its own)")
    parser.add_argument("--name", default=APPLICATION_NAME, help="Serve application name")
    parser.add_argument("--no-wait", action="store_true", help="deploy and return instead of serving until Ctrl-C")


FLAGS = {
    "storage.root": "--storage-root",
    "serve.host": "--host",
    "serve.port": "--port",
    "serve.num_replicas": "--replicas",
    "serve.replica_cpus": "--replica-cpus",
}


def main(args: argparse.Namespace) -> int:
    from recsys_ray.cli import Stopped, load_config

    cfg = load_config(args, FLAGS)

    from ray import serve

    from recsys_ray.runtime import FOR_SERVICE, ensure_ray
    from recsys_ray.serve.app import ingest_application

    ensure_ray(args.address, profile=FOR_SERVICE)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(ingest_application(cfg), name=args.name, route_prefix=cfg.serve.route_prefix)
    print(f"{args.name} is serving on http://{cfg.serve.host}:{cfg.serve.port}{cfg.serve.route_prefix} "
          f"(storage root {cfg.storage.root})", flush=True)
    if args.no_wait:
        return 0
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, Stopped):
        serve.delete(args.name)  # on a cluster that outlives this command, take the application down
        raise
