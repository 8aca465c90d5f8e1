"""Helpers shared by the tests: tiny random models, parity bounds, CLI checks, test videos, fuzz settings."""
