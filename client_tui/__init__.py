"""The full-screen terminal client (its own issue)."""
