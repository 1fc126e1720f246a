"""Bazaar orders."""
