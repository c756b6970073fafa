"""HTTP routes of the broker."""
