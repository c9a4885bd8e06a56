"""Telemetry: what the server tells the outside about its traffic (dnstap, metrics)."""
