"""Load generation for the flood tests (tests/test_flood.py): loopback only, bounded in time."""
