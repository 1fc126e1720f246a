"""Auth domain: users, roles and scopes, grants and refresh-token families, as pure Python."""
