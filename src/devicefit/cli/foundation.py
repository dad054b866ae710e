"""Foundation CLI commands."""
