"""Converters between PyTorch checkpoints (timm, the official learngene repos) and this toolkit's
genes and model directories. Each is a table of rules (`convert/table.py`)."""
