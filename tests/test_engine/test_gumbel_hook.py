"""GumbelTemperatureHook: the schedule and its errors (resume: see
test_detector_e2e.py)."""
import math

import pytest

import laud_mm  # noqa: F401
from laud_mm import GumbelTemperatureHook


def test_exponential_schedule_from_5_to_0_1():
    hook = GumbelTemperatureHook(tau0=5.0, tau1=0.1)
    assert hook.tau_at(0, 1000) == pytest.approx(5.0)
    assert hook.tau_at(1000, 1000) == pytest.approx(0.1)
    assert hook.tau_at(500, 1000) == pytest.approx(math.sqrt(5.0 * 0.1))
    taus = [hook.tau_at(i, 100) for i in range(101)]
    assert all(a > b for a, b in zip(taus, taus[1:]))


def test_constant_for_detection():
    hook = GumbelTemperatureHook(tau0=0.1, tau1=0.1)
    assert all(hook.tau_at(i, 50) == pytest.approx(0.1) for i in range(51))


@pytest.mark.parametrize('kwargs,key', [(dict(tau0=0.), 'tau0'),
                                        (dict(tau1=-1.), 'tau1'),
                                        (dict(tau0='5'), 'tau0')])
def test_bad_values(kwargs, key):
    with pytest.raises(ValueError, match=key):
        GumbelTemperatureHook(**kwargs)
