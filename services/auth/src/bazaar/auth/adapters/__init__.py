"""Auth adapters: SQL repositories, password hashing, the key ring, the unit of work."""
