"""Auth domain errors. User-facing ones map to problem+json; grant errors to RFC 6749."""

from __future__ import annotations


class AuthError(Exception):
    """Base of every auth domain error."""


class EmailTaken(AuthError):
    """Another account already uses this email (compared case-insensitively)."""


class UserNotFound(AuthError):
    """No user has this id."""


class NotAUser(AuthError):
    """The token speaks for a service client, not a user."""


class OAuthError(AuthError):
    """A token-endpoint error, answered in RFC 6749 form."""

    error = "invalid_request"
    status = 400


class InvalidRequest(OAuthError):
    """A parameter is missing, repeated or malformed."""


class InvalidGrant(OAuthError):
    """Bad credentials, or a refresh token that is unknown, used, revoked or expired."""

    error = "invalid_grant"


class InvalidClient(OAuthError):
    """The client could not be authenticated."""

    error = "invalid_client"
    status = 401


class InvalidScope(OAuthError):
    """The requested scope is unknown or exceeds what may be granted."""

    error = "invalid_scope"


class UnsupportedGrantType(OAuthError):
    """The grant type is not one this server supports."""

    error = "unsupported_grant_type"
