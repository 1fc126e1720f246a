"""Catalog use cases: one async function per thing a client can do."""
