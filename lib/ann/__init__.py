"""Backbeat ann."""
