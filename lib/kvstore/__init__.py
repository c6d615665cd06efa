"""Backbeat kvstore."""
