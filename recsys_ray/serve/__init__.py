"""The ingestion service: tenants push events and catalog items over HTTP, on Ray Serve.

`app.build_app` is the typed Serve application builder (`deploy/serve_config.yaml`
points at it); the other modules hold the parts that do not need Ray: key
checks, body limits, batched validation and landing, upload reports, Kafka events.
"""
