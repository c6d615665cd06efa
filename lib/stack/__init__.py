"""Backbeat stack."""
