"""Backbeat clusters."""
