"""The admin API (``/v1``): registry, admin-token and signing-key administration.

``routes.admin_router(broker)`` builds the router; ``auth.require_scope`` guards each route
with a scoped admin token; ``tokens`` holds the token table. Import the submodules directly:
this package imports nothing so ``tokens`` stays free of the web stack.
"""
