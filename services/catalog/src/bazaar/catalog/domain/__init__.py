"""Catalog domain: products, stock and reservations, as pure Python."""
