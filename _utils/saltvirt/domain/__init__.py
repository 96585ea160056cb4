"""Domains: the domain XML model, lifecycle operations, updates and snapshots."""
