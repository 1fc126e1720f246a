"""Auth HTTP API: users, the token and revocation endpoints, discovery documents."""
