"""The durable outbox: events survive outages, kill -9 and power cuts until acknowledged."""
