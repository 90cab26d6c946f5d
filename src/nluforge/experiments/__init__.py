"""L4: run configs, the pipeline stages of one cell, grid expansion and runners."""
