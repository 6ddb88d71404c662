"""Turning (query, document) text into scored, ranked results; knows no devices and no HTTP."""
