"""Per-example masks in result files: exact round trip, compact, and malformed input refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_mm.runs.results import decode_mask, encode_mask


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 357, 10_000])
def test_mask_round_trip(n):
    mask = np.random.default_rng(n).random(n) < 0.3
    encoded = encode_mask(torch.from_numpy(mask))
    assert encoded["n"] == n
    assert np.array_equal(decode_mask(encoded), mask)


def test_mask_known_bits():
    # 1,0,1,1,0,0,0,0 | 1 -> bytes 0xB0, 0x80
    encoded = encode_mask([True, False, True, True, False, False, False, False, True])
    assert encoded == {"n": 9, "bits": "sIA="}


@pytest.mark.parametrize("bad", [{}, {"n": 9}, {"n": 9, "bits": "sA=="}, {"n": "x", "bits": ""},
                                 {"n": 9, "bits": "not base64!"}, {"n": -1, "bits": ""}])
def test_malformed_mask_is_a_value_error(bad):
    with pytest.raises(ValueError):
        decode_mask(bad)
