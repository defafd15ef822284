"""The pure core: decoding, normalizing, keys, paths and policies. No Azure SDK here."""
