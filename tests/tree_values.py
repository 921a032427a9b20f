"""Hypothesis strategies for what a tree may hold, shared by the codec-level tests."""

from __future__ import annotations

from hypothesis import strategies as st

#: Keys a client may send (no '$' prefix).
keys = st.text(max_size=8).filter(lambda key: not key.startswith("$"))
#: Scalars the daemon's tree may hold: NaN, infinities, 64-bit ints, bytes too.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.binary(max_size=16),
)
