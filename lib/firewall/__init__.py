"""Backbeat firewall."""
