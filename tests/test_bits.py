from hypothesis import given, strategies as st

from kho_inspect import bits


def naive_runs(data):
    """Trivially correct: walk every bit."""
    starts, lens, cur = [], [], None
    for i in range(len(data) * 8):
        if data[i // 8] >> (i % 8) & 1:
            if cur is None:
                cur = i
                starts.append(i)
                lens.append(0)
            lens[-1] += 1
        else:
            cur = None
    return starts, lens


def test_hand_checked():
    # byte 0 = 0b0000_0111 (bits 0-2), byte 1 = 0b1000_0000 (bit 15),
    # byte 2 = 0b0000_0001 (bit 16): runs [0,3) and [15,17)
    assert bits.runs(bytes([7, 0x80, 1, 0])) == ([0, 15], [3, 2])
    assert bits.runs(bytes(8)) == ([], [])
    assert bits.runs(b"\xff" * 8) == ([0], [64])
    assert bits.runs(b"\x55" * 8) == (list(range(0, 64, 2)), [1] * 32)
    assert bits.set_bits(bytes([0x81])) == [0, 7]


@given(st.binary(max_size=600))
def test_runs_match_naive(data):
    assert bits.runs(data) == naive_runs(data)


@given(st.lists(st.sampled_from([0, 0xFF, 0x0F, 0xF0, 0x55]), max_size=600))
def test_runs_structured(bytes_):
    data = bytes(bytes_)
    assert bits.runs(data) == naive_runs(data)


@given(st.binary(max_size=600), st.integers(0, 1 << 40), st.integers(12, 40))
def test_block_runs_match_naive(data, base, shift):
    starts, lens = naive_runs(data)
    assert bits.block_runs(data, base, shift, 7) == [
        (base + (s << shift), 7, n) for s, n in zip(starts, lens)]


@given(st.integers(0, 1 << 40), st.integers(12, 40),
       st.sampled_from([0x55, 0xAA, 0x5A, 0x33]))
def test_block_runs_table_path(base, shift, pattern):
    data = bytes([pattern]) * 2048          # >= 4096 runs: the table path
    starts, lens = naive_runs(data)
    assert bits.block_runs(data, base, shift, 3) == [
        (base + (s << shift), 3, n) for s, n in zip(starts, lens)]
