import pytest

from meshops import HeadModel


@pytest.fixture(scope="session")
def head() -> HeadModel:
    return HeadModel.load()
