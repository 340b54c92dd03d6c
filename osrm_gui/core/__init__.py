"""Headless core of osrm-gui. Nothing under this package may import Qt."""
