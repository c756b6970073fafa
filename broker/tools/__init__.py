"""Tool metadata over the network: the address policy, the guarded fetcher and the
background refresher (DESIGN §4, "Tools (CIMD-style)")."""
