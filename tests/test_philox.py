"""Philox4x32-10 known-answer vectors (Random123 tests/kat_vectors) and the counter mapping."""

import pytest
import torch

from philox_reference import element_words, philox4x32_10

KNOWN_ANSWERS = [
    ([0x00000000] * 4, [0x00000000] * 2, [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    (
        [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
        [0xA4093822, 0x299F31D0],
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
    ),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_cpp_philox_matches_random123_vectors(ext, counter, key, expected):
    assert torch.ops.initkit._philox4x32_10(counter, key) == expected


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_python_reference_matches_random123_vectors(counter, key, expected):
    assert list(philox4x32_10(counter, key)) == expected


def test_philox_rejects_wrong_word_counts(ext):
    with pytest.raises(ValueError, match="expected 4 counter and 2 key words"):
        torch.ops.initkit._philox4x32_10([0, 0, 0], [0, 0])


@pytest.mark.parametrize("stream,offset", [(0, 0), (7, 0), (3, 5), (2**40 + 1, 2**33)])
def test_uniform_fill_uses_documented_counter_mapping(ext, stream, offset):
    # float32 uniform: element i takes word i % 4 of Philox(counter=(i // 4, stream), key=seed),
    # and keeps its top 24 bits: u = (w >> 8) * 2^-24.
    seed = 0x1234_5678_9ABC_DEF
    t = torch.empty(37)
    torch.ops.initkit.uniform_fill(t, 0.0, 1.0, torch.tensor(seed), stream, offset)
    for local in (0, 1, 2, 3, 4, 17, 36):
        words, j = element_words(seed, stream, offset + local, per_group=4)
        assert t[local].item() == (words[j] >> 8) * 2.0**-24


def test_double_uniform_fill_uses_two_words_per_element(ext):
    seed, stream = 99, 1
    t = torch.empty(9, dtype=torch.float64)
    torch.ops.initkit.uniform_fill(t, 0.0, 1.0, torch.tensor(seed), stream)
    for i in range(9):
        words, j = element_words(seed, stream, i, per_group=2)
        bits = ((words[2 * j] << 32) | words[2 * j + 1]) >> 11
        assert t[i].item() == bits * 2.0**-53


def test_philox_floor_writes_the_first_draw_words(ext):
    # The benchmarks' generator floor: raw words of the fills' first draw, as float32 bits.
    seed, stream = 0x1234_5678_9ABC_DEF, 3
    t = torch.empty(4, 5)
    torch.ops.initkit._philox_fill(t, torch.tensor(seed), stream)
    bits = t.view(torch.int32).flatten().tolist()
    for i in range(20):
        words, j = element_words(seed, stream, i, per_group=4)
        assert bits[i] & 0xFFFFFFFF == words[j]
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.initkit._philox_fill(torch.empty(4, dtype=torch.float64), torch.tensor(seed))
