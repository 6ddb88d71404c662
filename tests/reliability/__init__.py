"""Reliability tests: overload, soak, faults, fuzzing and security (figures go to RELIABILITY.md)."""
