"""Shared fixtures: tiny synthetic label maps and stores, and the location of the real data."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.data import disc_labels


@pytest.fixture
def torch_one_thread():
    """Tiny networks run fastest on one torch thread, and the machine's two cores are shared.

    Use with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def labels_small() -> np.ndarray:
    return disc_labels(8)
