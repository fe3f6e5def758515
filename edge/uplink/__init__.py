"""Uplink: signed batches from the outbox to the city platform."""
