"""Writ broker: the token service, its decision, audit and admin surface."""
