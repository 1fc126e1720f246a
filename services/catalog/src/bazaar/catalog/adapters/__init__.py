"""Catalog adapters: SQL repositories and the unit of work."""
