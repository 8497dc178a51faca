"""Plugins shipped with glocon itself (registered through entry points like any other)."""
