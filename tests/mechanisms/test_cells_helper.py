"""The helper itself: it finds tagged cells and fails loudly on a notebook without one."""
import pytest

from tests.mechanisms._cells import mechanism_sources


def test_a_notebook_without_mechanism_cells_is_an_error():
    with pytest.raises(AssertionError, match="no cell tagged 'mechanism'"):
        mechanism_sources("00_data_preparation")
