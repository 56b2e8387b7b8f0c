"""Batch jobs over datasets (classify, caption, ask, embed) and search over their embeddings; locally or on Ray."""
