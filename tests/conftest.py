import pytest
import torch

from meshops import HeadModel


@pytest.fixture(scope="session")
def head() -> HeadModel:
    return HeadModel.load()


@pytest.fixture(autouse=True)
def one_thread():
    """The tests' models are tiny: one thread runs them fastest, and far faster than two threads
    fighting over two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
