"""Token grants, one per module, dispatched from a table keyed by grant type."""
