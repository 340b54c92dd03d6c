"""What a merge starts from: base models, LoRA adapters, tasks and their sources, Hub ids."""

from osrm_gui.core.inputs import demo_tasks  # noqa: F401  (registers the demo: task source)
