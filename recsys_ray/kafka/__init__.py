"""The Kafka consumer: events from Kafka topics landed in tenants' raw zones exactly once.

`messages` turns one partition's micro-batch into landed and dead-letter rows
(pure Arrow), `landing` writes them, `consumer` is the asyncio loop around
aiokafka, and `actor` / `deployment` run that loop on Ray as an actor or inside
a Serve application. See docs/kafka.md.
"""
