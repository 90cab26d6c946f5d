"""nluforge."""
