"""Use cases: each takes its stores as arguments and does one job."""
