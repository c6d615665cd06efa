"""Backbeat dag."""
