"""CLI commands for proxies (placeholder until implemented)."""
