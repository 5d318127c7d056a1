import numpy as np
import pytest

import pyconv


@pytest.fixture(params=pyconv.supported_isas())
def isa(request):
    """Runs a test under every micro-kernel path this CPU supports."""
    previous = pyconv.get_isa()
    pyconv.set_isa(request.param)
    yield request.param
    pyconv.set_isa(previous)


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}thr")
def threads(request):
    """Runs a test with 1 and with 2 OpenMP threads."""
    previous = pyconv.get_num_threads()
    pyconv.set_num_threads(request.param)
    yield request.param
    pyconv.set_num_threads(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
