"""over_seeds: mean, sample sd (ddof=1), count and per-seed values, checked by hand."""

from __future__ import annotations

import doctest
import math

import pytest

import workbench.results.seeds as seeds_module
from workbench.results.seeds import over_seeds


def test_mean_and_sample_sd_by_hand():
    s = over_seeds([0.1, 0.4, 0.7])
    assert s.mean == pytest.approx(0.4)
    # sum of squared deviations 0.09 + 0 + 0.09 = 0.18, over n - 1 = 2: 0.09, sd 0.3
    assert s.sd == pytest.approx(0.3) and s.n == 3 and s.per_seed == [0.1, 0.4, 0.7]


def test_undefined_values_are_left_out_of_the_statistics_but_kept_per_seed():
    s = over_seeds([1.0, None, float("nan"), 3.0])
    assert s.mean == pytest.approx(2.0) and s.sd == pytest.approx(math.sqrt(2.0)) and s.n == 2
    assert s.per_seed[1] is None and math.isnan(s.per_seed[2])


def test_one_seed_has_no_sd_and_no_seed_no_mean():
    one = over_seeds([0.5])
    assert one.mean == 0.5 and one.sd is None and one.sd_or(0.0) == 0.0
    none = over_seeds([None])
    assert none.mean is None and none.n == 0 and math.isnan(none.mean_or(float("nan")))


def test_doctest():
    assert doctest.testmod(seeds_module).failed == 0
