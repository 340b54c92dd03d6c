"""osrm-gui: a workbench for merging LoRA adapters, built around OSRM."""

__version__ = "0.1.0"
