"""Backbeat audit."""
