"""The graph build's scratch arrays: huge-page backed when large, plain numpy otherwise, and always
the same values as numpy's own."""

import mmap

import numpy as np
import pytest

from backbeat.ann import hugepages as hp


def test_large_arrays_start_on_a_huge_page_and_hold_what_numpy_would():
    shape = (hp.MIN_BYTES // 8 + 1000, 2)
    a = hp.full(shape, -1, np.int32)
    assert a.shape == shape and a.dtype == np.int32 and a.flags.c_contiguous and a.flags.writeable
    assert (a == -1).all()
    if getattr(mmap, "MADV_HUGEPAGE", None) is not None:
        assert a.ctypes.data % hp.HUGE == 0  # every page of it can be a huge one
    src = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    b = hp.copy(src)
    assert np.array_equal(b, src) and b.ctypes.data != src.ctypes.data
    b[0, 0] = 7
    assert src[0, 0] == 0


def test_small_arrays_are_plain_numpy():
    a = hp.empty((10, 3), np.float32)
    assert isinstance(a, np.ndarray) and a.shape == (10, 3) and a.base is None


@pytest.mark.parametrize("how", ["no advice", "mmap fails"])
def test_without_huge_pages_the_arrays_are_ordinary(monkeypatch, how):
    if how == "no advice":
        monkeypatch.delattr(mmap, "MADV_HUGEPAGE", raising=False)
    else:
        def refuse(*args, **kwargs):
            raise OSError(12, "Cannot allocate memory")
        monkeypatch.setattr(hp.mmap, "mmap", refuse)
    a = hp.full((hp.MIN_BYTES // 4 + 10,), 3, np.int32)
    assert a.base is None and (a == 3).all()
