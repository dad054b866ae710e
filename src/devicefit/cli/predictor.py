"""CLI commands for predictor (placeholder until implemented)."""
