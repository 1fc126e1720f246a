"""Test support for Bazaar packages: the pytest plugin and its helpers."""
