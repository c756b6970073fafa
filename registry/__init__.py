"""Writ's registries: agents, namespace bounds, tools, gateways and trust domains (DESIGN §4)."""
