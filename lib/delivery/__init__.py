"""Backbeat delivery."""
