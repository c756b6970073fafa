"""SPIFFE trust bundles: parsing (``parse``), where a bundle comes from (``sources``:
file, bundle endpoint, Workload API) and the in-memory set the hot path reads (``trust``)."""
