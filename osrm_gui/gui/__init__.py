"""The Qt desktop app. Everything Qt lives under this package."""
