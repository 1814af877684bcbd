"""Placeholder CLI; replaced below."""
