"""Adapters: one Azure service each (tables, blobs, Log Analytics, telemetry)."""
