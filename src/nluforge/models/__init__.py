"""L1: load any Hugging Face encoder (or ``default``), the architecture table, size on disk."""
