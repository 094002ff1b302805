"""Tests of the version-2 durable marks and the refined version-1 recovery rule (run by test_reader.py)."""
