"""Auth use cases: registration, user administration, and the token grants."""
