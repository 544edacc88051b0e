"""Stacks wire constructs together; the google binding is registered lazily before any is imported."""

from stacks.google_binding import register_lazily

register_lazily()
