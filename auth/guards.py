"""Helpers for functions: require a signed-in caller, an organization role, a permission.

Each raises ``ConvexError`` with a ``code`` (``UNAUTHENTICATED`` or
``FORBIDDEN``), which reaches the caller with its data intact.
"""

from __future__ import annotations

from typing import Any

from engine import ConvexError

__all__ = ["require_identity", "require_permission", "require_role"]


def _identity(ctx: Any, helper: str) -> Any:
    """``ctx.auth.get_user_identity()``; a ``TypeError`` naming ``helper`` for anything but
    a function's context (``ctx.auth`` itself, ``None``)."""
    reader = getattr(getattr(ctx, "auth", None), "get_user_identity", None)
    if not callable(reader):
        hint = (
            ": pass ctx itself, not ctx.auth"
            if callable(getattr(ctx, "get_user_identity", None))
            else ""
        )
        raise TypeError(
            f"auth.{helper}(ctx, ...) takes the function's ctx (a QueryCtx, MutationCtx or "
            f"ActionCtx); found {type(ctx).__name__} {ctx!r}{hint}."
        )
    return reader()


def _name(value: object, what: str, helper: str, example: str) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"auth.{helper}(ctx, {what}) takes the {what} as a non-empty str ({example}); "
            f"found {type(value).__name__} {value!r}."
        )


def require_identity(ctx: Any) -> Any:
    """The caller's identity; raises ``ConvexError({"code": "UNAUTHENTICATED"})`` if none."""
    identity = _identity(ctx, "require_identity")
    if identity is None:
        raise ConvexError({"code": "UNAUTHENTICATED", "message": "Sign in to do this."})
    return identity


def require_role(ctx: Any, role: str) -> Any:
    """The caller, if their active organization role is ``role`` (``admin`` or ``org:admin``)."""
    _name(role, "role", "require_role", "'admin' or 'org:admin'")
    identity = require_identity(ctx)
    wanted = role if role.startswith("org:") else f"org:{role}"
    org = getattr(identity, "org", None)
    if org is None or org.role != wanted:
        raise ConvexError(
            {"code": "FORBIDDEN", "message": f"Requires the role {wanted}.", "role": wanted}
        )
    return identity


def require_permission(ctx: Any, permission: str) -> Any:
    """The caller, if their active organization grants ``permission`` (``org:feature:perm``)."""
    _name(permission, "permission", "require_permission", "'org:feature:permission'")
    identity = require_identity(ctx)
    org = getattr(identity, "org", None)
    if org is None or permission not in org.permissions:
        raise ConvexError(
            {"code": "FORBIDDEN", "message": f"Requires {permission}.", "permission": permission}
        )
    return identity
