"""Writing to the local SQLite stores: one batched writer thread for every store."""
