"""L0: registries, strict config, atomic io, errors. Imports no torch at module level."""
