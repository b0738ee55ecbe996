import numpy as np
import pytest

import xpnet
from xpnet.dtypes import DTYPES, dtype_info
from xpnet.gradient import default_step, itemsize, resolve_step


@pytest.mark.parametrize("name", list(DTYPES))
def test_each_record_matches_its_dtype(xp, name):
    info = DTYPES[name]
    host = np.dtype(name)
    assert info.itemsize == host.itemsize and info.eps == np.finfo(host).eps
    assert np.dtype(info.complex_name).itemsize == 2 * host.itemsize
    assert dtype_info(xp, info.real(xp)) is info and dtype_info(xp, info.complex(xp)) is info
    assert itemsize(xp, info.real(xp)) == host.itemsize
    assert itemsize(xp, info.complex(xp)) == 2 * host.itemsize
    assert default_step(info.real(xp), xp) == info.central_step
    low, high = info.step_range
    assert low <= info.central_step <= high


@pytest.mark.parametrize("name", list(DTYPES))
def test_default_step_balances_truncation_and_rounding(name):
    """The default h sits near the optimum of a central difference, cbrt(eps)
    times a modest factor: the derivative of exp at 0 in this dtype is within
    100 * eps**(2/3) of 1 (truncation ~h^2/6, rounding ~eps/h)."""
    info = DTYPES[name]
    h = np.asarray(info.central_step, dtype=name)
    one = np.asarray(1.0, dtype=name)
    slope = float((np.exp(one * h) - np.exp(-one * h)) / (2 * h))
    assert abs(slope - 1.0) < 100 * info.eps ** (2 / 3)


def test_unknown_dtypes_are_one_clear_error(xp):
    with pytest.raises(TypeError, match="expected a dtype of"):
        dtype_info(xp, xp.int64)


def test_small_float32_step_warns_and_float64_does_not(xp):
    with pytest.warns(UserWarning, match="h=0.0001 in float32"):
        resolve_step(1e-4, xp.float32, xp)
    assert resolve_step(1e-4, xp.float64, xp) == 1e-4


def test_backend_and_cli_offer_exactly_the_registry():
    assert xpnet.backend.DTYPES == tuple(DTYPES)
    net = xpnet.TwoLayerNet(3, 2, 2, dtype="float32")
    assert net.backend.dtype_name == "float32"
