"""Driving core job generators from tests, and running tiny models on one torch thread."""

from contextlib import contextmanager

import torch

from osrm_gui.core.progress import Run


def drive(job):
    """(result, every event) of a job generator run to its end."""
    run = Run(job)
    events = list(run)
    return run.result, events


@contextmanager
def one_torch_thread():
    """On a shared two-core machine a tiny model's forward passes mostly wait for a second thread
    (many times slower than one); and one thread sums in the order a one-thread worker does."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
