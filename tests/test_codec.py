"""codec.py: what a client may send, how it travels, and what the daemon refuses."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import math
import pathlib
import re
from typing import Any

import hypothesis.extra.numpy as hnp
import msgpack
import numpy as np
import pytest
from equality import same
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collectord import codec
from collectord.codec import (
    EXT_ISOTIME,
    EXT_NDARRAY,
    MAX_VALUE_DEPTH,
    DecodeError,
    check_value,
    make_packer,
    pack,
    unpack,
)
from collectord.errors import UnsupportedValueError

# -- helpers ---------------------------------------------------------------------------


def round_trip(value: Any) -> Any:
    check_value(value)
    return unpack(pack(value))


def native_datetime_text(value: np.ndarray | np.generic) -> str:
    """numpy's text of a datetime64 scalar, read in its own byte order
    (``datetime_as_string`` reads a big-endian one as if it were little-endian)."""
    return str(np.datetime_as_string(value.astype(value.dtype.newbyteorder("="))))


def expected(value: Any) -> Any:
    """What ``value`` should look like after a round trip."""
    if isinstance(value, dict):
        return {key: expected(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [expected(item) for item in value]
    if isinstance(value, np.ndarray | np.generic):
        if value.dtype.kind == "M" and value.ndim == 0:
            return native_datetime_text(value)
        # numpy's float64, str_ and bytes_ subclass Python's types: msgpack sends them natively.
        for native in (float, str, bytes):
            if isinstance(value, native):
                return native(value)
        return np.asarray(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


def nested_lists(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"k": value}
    return value


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def ext_frame(code: int, payload: bytes) -> bytes:
    """``{"value": <ext code payload>}``, written by hand: msgpack refuses negative codes."""
    assert len(payload) < 2**32
    ext32 = b"\xc9" + len(payload).to_bytes(4, "big") + code.to_bytes(1, "big", signed=True)
    return msgpack.packb({"value": None})[:-1] + ext32 + payload


# -- strategies ------------------------------------------------------------------------

int64_range = st.integers(-(2**63), 2**64 - 1)
plain_scalars = st.one_of(
    st.none(),
    st.booleans(),
    int64_range,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)
array_dtypes = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.unicode_string_dtypes(endianness="?", max_len=4),
    hnp.byte_string_dtypes(max_len=4),
    hnp.datetime64_dtypes(endianness="?"),
)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


def unicode_text(array: np.ndarray) -> bool:
    """Not text holding a surrogate (hypothesis makes some): refused, having
    no UTF-8 form (``test_end_to_end.py``, ``test_bad_input.py``)."""
    if array.dtype.kind != "U" or not array.size:
        return True
    codes = np.ascontiguousarray(array).reshape(-1).view(array.dtype.byteorder + "u4")
    return not ((codes >= 0xD800) & (codes <= 0xDFFF)).any()


numpy_arrays = hnp.arrays(array_dtypes, shapes).filter(unicode_text)


@st.composite
def non_contiguous_arrays(draw: st.DrawFn) -> np.ndarray:
    shape = hnp.array_shapes(min_dims=2, max_dims=3, min_side=2)
    array = draw(hnp.arrays(array_dtypes, shape).filter(unicode_text))
    view = draw(st.sampled_from(["step", "transpose", "fortran"]))
    if view == "step":
        return array[..., ::2]
    if view == "transpose":
        return array.T
    return np.asfortranarray(array)


numpy_scalars = hnp.arrays(array_dtypes, shape=()).filter(unicode_text).map(lambda a: a[()])
times = st.one_of(
    st.datetimes(
        timezones=st.sampled_from([None, dt.timezone.utc, dt.timezone(-dt.timedelta(hours=5))])
    ),
    st.dates(),
    st.times(),
)
paths = st.builds(pathlib.PurePosixPath, st.text(max_size=10))
leaf_values = st.one_of(
    plain_scalars,
    numpy_arrays,
    non_contiguous_arrays(),
    numpy_scalars,
    times,
    paths,
    st.binary(max_size=8).map(bytearray),
)
keys = st.text(max_size=8).filter(lambda key: not key.startswith("$"))
values = st.recursive(
    leaf_values,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=12,
)


# -- round trips --------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(values)
def test_supported_values_round_trip(value: Any) -> None:
    assert same(round_trip(value), expected(value))


@settings(max_examples=100, deadline=None)
@given(st.one_of(numpy_arrays, non_contiguous_arrays()))
def test_arrays_keep_dtype_byte_order_shape_and_contents(array: np.ndarray) -> None:
    back = round_trip(array)
    if array.dtype.kind == "M" and array.ndim == 0:
        assert back == native_datetime_text(array)
        return
    assert isinstance(back, np.ndarray)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert back.tobytes() == array.tobytes()


@settings(max_examples=50, deadline=None)
@given(values)
def test_make_packer_packs_like_pack(value: Any) -> None:
    assert make_packer().pack(value) == pack(value)


def test_integer_limits_round_trip() -> None:
    for number in (-(2**63), -1, 0, 2**63 - 1, 2**63, 2**64 - 1):
        assert same(round_trip(number), number)


def test_special_floats_round_trip() -> None:
    specials = [math.nan, math.inf, -math.inf, -0.0]
    assert same(round_trip(specials), specials)


def test_tuples_arrive_as_lists() -> None:
    assert round_trip({"pair": (1, (2, 3))}) == {"pair": [1, [2, 3]]}


def test_times_arrive_as_iso_text() -> None:
    moment = dt.datetime(2024, 3, 1, 12, 30, 5, 123456, tzinfo=dt.timezone.utc)
    assert round_trip(
        {
            "datetime": moment,
            "naive": dt.datetime(2024, 3, 1, 12, 30),
            "date": dt.date(2024, 3, 1),
            "time": dt.time(12, 30, 5),
            "numpy": np.datetime64("2024-03-01T12:30:05"),
            "numpy_0d": np.array(np.datetime64("2024-03-01", "D")),
            "nat": np.datetime64("NaT"),
        }
    ) == {
        "datetime": "2024-03-01T12:30:05.123456+00:00",
        "naive": "2024-03-01T12:30:00",
        "date": "2024-03-01",
        "time": "12:30:05",
        "numpy": "2024-03-01T12:30:05",
        "numpy_0d": "2024-03-01",
        "nat": "NaT",
    }


def test_datetime64_array_stays_an_array() -> None:
    array = np.array(["2024-01-01", "NaT"], dtype="datetime64[D]")
    back = round_trip(array)
    assert back.dtype == array.dtype
    assert back.tobytes() == array.tobytes()


def test_paths_arrive_as_text() -> None:
    assert round_trip(pathlib.Path("/data/fish 1")) == "/data/fish 1"
    assert round_trip(pathlib.PureWindowsPath("C:/data")) == "C:\\data"


def test_numpy_scalars_arrive_as_0d_arrays() -> None:
    back = round_trip(np.float32(1.5))
    assert isinstance(back, np.ndarray) and back.shape == () and back.dtype == np.float32
    assert back == 1.5
    flag = round_trip(np.bool_(True))
    assert flag.dtype == np.bool_ and bool(flag) is True


def test_bool_stays_bool_not_int() -> None:
    back = round_trip([True, 1, False, 0])
    assert [type(item) for item in back] == [bool, int, bool, int]


def test_msgpack_timestamps_arrive_as_iso_text() -> None:
    frame = msgpack.packb({"t": [msgpack.Timestamp(0, 0), msgpack.Timestamp(1, 500_000_000)]})
    assert unpack(frame) == {
        "t": ["1970-01-01T00:00:00.000000000+00:00", "1970-01-01T00:00:01.500000000+00:00"]
    }


_TIMESTAMP_TEXT = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{9})\+00:00", re.ASCII)


def timestamp_of(text: str) -> msgpack.Timestamp:
    """The instant ``codec.timestamp_text`` wrote, read back."""
    match = _TIMESTAMP_TEXT.fullmatch(text)
    assert match, f"{text!r} is not YYYY-MM-DDTHH:MM:SS.nnnnnnnnn+00:00"
    moment = dt.datetime.fromisoformat(match[1]).replace(tzinfo=dt.timezone.utc)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    seconds = (moment - epoch) // dt.timedelta(seconds=1)
    return msgpack.Timestamp(seconds, int(match[2]))


timestamps = st.builds(
    msgpack.Timestamp,
    st.integers(codec.TIMESTAMP_FIRST_SECOND, codec.TIMESTAMP_LAST_SECOND),
    st.integers(0, 999_999_999),
)


@settings(max_examples=500, deadline=None)
@given(timestamps)
@example(msgpack.Timestamp(0, 0))  # the 32-bit form
@example(msgpack.Timestamp(2**32 - 1, 0))
@example(msgpack.Timestamp(1_700_000_000, 1))  # the 64-bit form
@example(msgpack.Timestamp(2**34 - 1, 999_999_999))
@example(msgpack.Timestamp(-1, 999_999_999))  # the 96-bit form
@example(msgpack.Timestamp(codec.TIMESTAMP_FIRST_SECOND, 0))
@example(msgpack.Timestamp(codec.TIMESTAMP_LAST_SECOND, 999_999_999))
def test_msgpack_timestamps_keep_their_nanoseconds(stamp: msgpack.Timestamp) -> None:
    """Every timestamp of the years 0001 to 9999, in each of its three forms,
    becomes text in one fixed form that gives back the same instant."""
    text = unpack(msgpack.packb({"t": stamp}))["t"]
    assert timestamp_of(text) == stamp


#: The instants a datetime64[ns] can hold, in seconds since 1970.
_NS_RANGE = (-(2**63) + 1) // 10**9 + 1, (2**63 - 1) // 10**9 - 1


@settings(max_examples=300, deadline=None)
@given(st.integers(*_NS_RANGE), st.integers(0, 999_999_999))
def test_a_timestamp_is_the_same_text_as_the_same_datetime64_ns(
    seconds: int, nanoseconds: int
) -> None:
    """ext -1 and numpy's datetime64[ns] (sent as ext 2 text) agree to the nanosecond."""
    as_timestamp = unpack(msgpack.packb({"t": msgpack.Timestamp(seconds, nanoseconds)}))["t"]
    as_numpy = round_trip({"t": np.datetime64(seconds * 10**9 + nanoseconds, "ns")})["t"]
    assert as_timestamp == as_numpy + "+00:00"


@pytest.mark.parametrize(
    "seconds",
    [codec.TIMESTAMP_FIRST_SECOND - 1, codec.TIMESTAMP_LAST_SECOND + 1, -(2**63), 2**63 - 1],
)
def test_a_timestamp_outside_the_years_1_to_9999_is_refused(seconds: int) -> None:
    with pytest.raises(DecodeError, match=r"outside the years 0001 to 9999$"):
        unpack(msgpack.packb({"t": msgpack.Timestamp(seconds, 0)}))


def test_nesting_up_to_the_limit_round_trips() -> None:
    assert round_trip(nested_lists(MAX_VALUE_DEPTH)) == nested_lists(MAX_VALUE_DEPTH)
    assert round_trip(nested_dicts(MAX_VALUE_DEPTH)) == nested_dicts(MAX_VALUE_DEPTH)


# -- refused on the way out --------------------------------------------------------


class Thing:
    pass


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        ({1, 2}, "builtins.set"),
        (frozenset(), "builtins.frozenset"),
        (Thing(), "Thing"),
        (1 + 2j, "builtins.complex"),
        (np.complex64(1), "complex64"),
        (np.timedelta64(5, "s"), "timedelta64"),
        (np.array([1, 2], dtype="timedelta64[s]"), "timedelta64"),
        (np.array([1j]), "complex128"),
        (np.array([None, 1], dtype=object), "object"),
        (np.zeros(2, dtype=[("x", "i4")]), "numpy dtype"),
        (2**64, "does not fit in 64 bits"),
        (-(2**63) - 1, "does not fit in 64 bits"),
        ({1: "a"}, "dict key 1 is not a str but int"),
        ({("a",): 1}, "is not a str but tuple"),
        ({"$bytes": "AA=="}, "starts with '\\$'"),
        # Containers at levels 0 to 65: one level too many.
        (nested_lists(MAX_VALUE_DEPTH + 2), "nested deeper"),
        (nested_dicts(MAX_VALUE_DEPTH + 2), "nested deeper"),
    ],
)
def test_check_value_refuses(bad: Any, what: str) -> None:
    with pytest.raises(UnsupportedValueError, match=what):
        check_value(bad)


def test_refusal_names_where_the_problem_is() -> None:
    value = {"ok": [1, 2], "trial": [0, {"times": {1.0, 2.0}}]}
    with pytest.raises(UnsupportedValueError) as caught:
        check_value(value, where="stimulus/log")
    assert str(caught.value).startswith("stimulus/log['trial'][1]['times']: unsupported type")
    assert "set" in str(caught.value)


def test_refusal_names_where_a_bad_key_is() -> None:
    with pytest.raises(UnsupportedValueError, match=r"^camera\['roi'\]: dict key 3"):
        check_value({"roi": {3: 1}}, where="camera")
    with pytest.raises(UnsupportedValueError, match=r"^camera\[2\]: dict key '\$x'"):
        check_value([0, 1, {"$x": 1}], where="camera")


def test_refusal_names_where_a_big_integer_is() -> None:
    with pytest.raises(UnsupportedValueError, match=r"^value\[0\]\['n'\]: integer 1844674"):
        check_value([{"n": 2**64}])


def test_dollar_is_only_refused_at_the_start_of_a_key() -> None:
    check_value({"price$": 1, "a$b": {"c": "$text values are fine"}})


def test_unsupported_value_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        check_value(object())


@pytest.mark.parametrize(
    "bad",
    [
        {1, 2},
        Thing(),
        1j,
        2**64,
        np.array([1j]),
        np.array([None], dtype=object),
        [np.timedelta64(1)],
    ],
)
def test_pack_refuses_with_unsupported_value_error(bad: Any) -> None:
    with pytest.raises(UnsupportedValueError):
        pack(bad)


@settings(max_examples=100, deadline=None)
@given(values)
def test_check_value_accepts_what_round_trips(value: Any) -> None:
    check_value(value)  # must not raise for anything the table allows


def test_lone_surrogate_is_refused_by_pack() -> None:
    with pytest.raises(UnsupportedValueError):
        pack({"name": "\ud800"})


def test_check_value_refuses_a_lone_surrogate() -> None:
    with pytest.raises(UnsupportedValueError, match=r"^value\['name'\]\[1\]: .*surrogate"):
        check_value({"name": ["ok", "\ud800"]})


def test_check_value_refuses_a_lone_surrogate_in_a_key() -> None:
    with pytest.raises(UnsupportedValueError, match=r"^value\['outer'\]"):
        check_value({"outer": {"\ud800": 1}})


# -- refused on the way in -----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_decode_error_only(frame: bytes) -> None:
    with contextlib.suppress(DecodeError):
        unpack(frame)


@settings(max_examples=200, deadline=None)
@given(values, st.data())
def test_corrupted_frames_raise_decode_error_only(value: Any, data: st.DataObject) -> None:
    frame = bytearray(pack(value))
    index = data.draw(st.integers(0, len(frame) - 1))
    frame[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        unpack(bytes(frame))


@settings(max_examples=150, deadline=None)
@given(values, st.data())
def test_truncated_frames_raise_decode_error(value: Any, data: st.DataObject) -> None:
    frame = pack(value)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(DecodeError):
        unpack(frame[:cut])


def test_empty_frame_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        unpack(b"")


def test_trailing_bytes_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        unpack(pack({"a": 1}) + b"\x00")


def test_invalid_utf8_text_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        unpack(b"\xa2\xff\xfe")  # a 2-byte str that is not UTF-8


@settings(max_examples=100, deadline=None)
@given(
    st.integers(-128, 127).filter(lambda code: code not in (-1, EXT_NDARRAY, EXT_ISOTIME)),
    st.binary(max_size=20),
)
def test_unknown_ext_codes_raise_decode_error(code: int, payload: bytes) -> None:
    with pytest.raises(DecodeError, match="unknown msgpack ext type"):
        unpack(ext_frame(code, payload))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100))
def test_garbage_npy_payload_raises_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        unpack(ext_frame(EXT_NDARRAY, payload))


def test_truncated_npy_payload_raises_decode_error() -> None:
    payload = npy(np.arange(10, dtype=np.float64))
    for cut in (0, 5, 60, len(payload) - 1):
        with pytest.raises(DecodeError):
            unpack(ext_frame(EXT_NDARRAY, payload[:cut]))


def test_npy_header_claiming_more_data_raises_decode_error() -> None:
    payload = npy(np.arange(10, dtype=np.int32)).replace(b"(10,)", b"(99,)")
    with pytest.raises(DecodeError):
        unpack(ext_frame(EXT_NDARRAY, payload))


def test_npy_header_with_a_bogus_dtype_raises_decode_error() -> None:
    payload = npy(np.arange(4, dtype=np.int32)).replace(b"'<i4'", b"'<zz'")
    with pytest.raises(DecodeError):
        unpack(ext_frame(EXT_NDARRAY, payload))


UNPICKLED: list[str] = []


def _record(what: str) -> str:
    UNPICKLED.append(what)
    return what


class Trap:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_record, ("unpickled",))


def test_pickled_object_array_is_refused_without_unpickling() -> None:
    payload = npy(np.array([Trap()], dtype=object), allow_pickle=True)
    UNPICKLED.clear()
    with pytest.raises(DecodeError):
        unpack(ext_frame(EXT_NDARRAY, payload))
    assert UNPICKLED == []


# A peer may send arrays check_value would have refused; jsonio could not write
# them (json.dumps raises TypeError on complex and timedelta values).
@pytest.mark.parametrize(
    "array",
    [
        np.array([1 + 2j]),
        np.array([1, 2], dtype="timedelta64[s]"),
        np.zeros(2, dtype="V3"),
        np.zeros(2, dtype=[("x", "<i4"), ("y", "<f8")]),
    ],
    ids=["complex", "timedelta64", "void", "structured"],
)
def test_npy_payload_of_a_refused_dtype_raises_decode_error(array: np.ndarray) -> None:
    with pytest.raises(DecodeError, match="dtype"):
        unpack(ext_frame(EXT_NDARRAY, npy(array)))


def test_non_utf8_isotime_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="UTF-8"):
        unpack(ext_frame(EXT_ISOTIME, b"\xff\xfe"))


def test_isotime_ext_arrives_as_text() -> None:
    assert unpack(ext_frame(EXT_ISOTIME, b"2024-01-01")) == {"value": "2024-01-01"}


def test_ext_frame_helper_writes_valid_frames() -> None:
    back = unpack(ext_frame(EXT_NDARRAY, npy(np.arange(3))))
    assert same(back, {"value": np.arange(3)})


def test_malformed_timestamp_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        unpack(ext_frame(-1, b"\x00\x01\x02"))


@pytest.mark.parametrize(
    "value",
    [{b"key": 1}, [0, {b"key": 1}], {"outer": {b"key": 1}}, {"a": [[{b"k": None}]]}],
    ids=["top", "in-list", "in-map", "deep"],
)
def test_bytes_map_keys_raise_decode_error(value: Any) -> None:
    with pytest.raises(DecodeError, match=r"^map keys must be str, not bin$"):
        unpack(msgpack.packb(value, use_bin_type=True))


@pytest.mark.parametrize(
    ("key", "name"),
    [
        (1, "int"),
        (-1, "int"),
        (None, "nil"),
        (1.5, "float"),
        (True, "bool"),
        ((1, 2), "array"),
        (msgpack.ExtType(EXT_NDARRAY, npy(np.arange(2))), "ext"),
        (msgpack.Timestamp(1, 0), "ext"),
    ],
)
@pytest.mark.parametrize("nested", [False, True])
def test_non_text_map_keys_raise_decode_error_naming_their_type(
    key: Any, name: str, nested: bool
) -> None:
    """The reason says what the protocol forbids, not how msgpack's Python library
    refused it (the message is valid msgpack)."""
    value = {"outer": [{key: 1}]} if nested else {key: 1}
    with pytest.raises(DecodeError) as refused:
        unpack(msgpack.packb(value))
    assert str(refused.value) == f"map keys must be str, not {name}"


def test_a_map_key_in_a_map_key_is_refused() -> None:
    frame = b"\x81" + b"\x81\xa1k\x01" + b"\x01"  # {{"k": 1}: 1}
    with pytest.raises(DecodeError, match=r"^map keys must be str, not map$"):
        unpack(frame)


def test_a_non_text_map_key_costs_only_its_own_value_in_a_batch() -> None:
    payload = b"".join(msgpack.packb(v) for v in ({"a": 1}, {"b": {2: 3}}, {"c": 4}))
    first, second, third = codec.unpack_many(payload, 3)
    assert codec.check_decoded(first) == {"a": 1}
    assert codec.check_decoded(third) == {"c": 4}
    with pytest.raises(DecodeError, match=r"^map keys must be str, not int$"):
        codec.check_decoded(second)


@pytest.mark.parametrize(
    "value",
    [{"$float": "nan"}, {"data": {"$bytes": "AA=="}}, [{"ok": 1, "$x": 2}]],
    ids=["top", "nested", "in-list"],
)
def test_dollar_map_keys_raise_decode_error(value: Any) -> None:
    # Else a peer could plant a jsonio tag that load_json turns into bytes or a float.
    with pytest.raises(DecodeError, match=r"starts with '\$'"):
        unpack(msgpack.packb(value))


def test_too_deep_nesting_raises_decode_error() -> None:
    for deep in (nested_lists(MAX_VALUE_DEPTH + 2), nested_dicts(MAX_VALUE_DEPTH + 2)):
        with pytest.raises(DecodeError, match="nested deeper"):
            unpack(msgpack.packb(deep))


def test_extremely_deep_nesting_raises_decode_error() -> None:
    # Beyond what msgpack itself would pack: 5000 one-element arrays, then nil.
    with pytest.raises(DecodeError):
        unpack(b"\x91" * 5000 + b"\xc0")
    with pytest.raises(DecodeError):
        unpack(b"\x81\xa1k" * 5000 + b"\xc0")


def test_huge_declared_length_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        unpack(b"\xdd\xff\xff\xff\xff")  # array32 of 2**32-1 elements, no data


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(codec.DecodeError, ValueError)


def test_masked_arrays_are_refused_rather_than_unmasked() -> None:
    masked = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    with pytest.raises(UnsupportedValueError, match=r"masked array"):
        check_value({"trace": masked})


# -- the client and the daemon agree on depth ------------------------------------------


def _client_accepts(kind: str, value: Any) -> bool:
    try:
        if kind == "params":
            codec.check_params({"v": value}, "deep/node")
        else:
            codec.check_value(value, "deep/node", depth=codec.DATA_VALUE_DEPTH)
    except UnsupportedValueError:
        return False
    return True


def _daemon_verdicts(kind: str, value: Any) -> set[bool]:
    """Whether the daemon accepts ``value`` on each path it can take there."""
    from collectord.collector import Collector
    from collectord.sources import Source

    body = {"path": "deep/node", "values": {"v": value}} if kind == "params" else None
    body = body or {"path": "deep/node", "value": value}
    verdicts = set()
    for batched in (False, True):  # the generic check, and the params fast path
        collector = Collector({})
        source = Source(session="s", name="deep")
        header = {"kind": kind, "seq": 1}
        frames = [b"", msgpack.packb(body)]
        if batched:
            header = {"kind": "batch", "seq": 1, "kinds": [kind]}
        verdicts.add(collector.apply_message(source, header, frames, 0).rejections == [])
    if kind == "params":  # what a later start replays: the parameters in BEGIN
        try:
            unpack(pack([[["deep", "node", "v"], value]]))
            verdicts.add(True)
        except DecodeError:
            verdicts.add(False)
    return verdicts


@pytest.mark.parametrize("kind", ["params", "data"])
@pytest.mark.parametrize("nest", [nested_lists, nested_dicts])
def test_client_and_daemon_agree_on_how_deep_a_value_may_be(kind, nest) -> None:
    at = codec.PARAM_VALUE_DEPTH if kind == "params" else codec.DATA_VALUE_DEPTH
    deepest = MAX_VALUE_DEPTH - at + 1  # containers the value may nest, itself included
    assert _client_accepts(kind, nest(deepest))
    assert _daemon_verdicts(kind, nest(deepest)) == {True}
    assert not _client_accepts(kind, nest(deepest + 1))
    assert _daemon_verdicts(kind, nest(deepest + 1)) == {False}
