"""The app's library: decoding, normalizing, indexing, retention, settings, telemetry."""
