"""Distillation: a frozen teacher and the loss terms that use it."""
