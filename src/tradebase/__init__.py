"""Tradebase: a self-hosted trading server with one relational database at its heart."""

__version__ = "0.1.0"
