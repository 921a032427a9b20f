"""Building the C client (clients/c) and calling it through ctypes, for
tests/test_c_client.py: ctypes stands in for MATLAB's loadlibrary, LabVIEW's
Call Library Function node and C#'s P/Invoke, which call the same functions."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parent.parent / "clients" / "c"
INSTALL = "apt-get install -y libzmq3-dev libmsgpack-dev cmake"
#: Set to 1 where the C toolchain must be present (.ci/run): a skip is then a failure.
REQUIRE_ENV = "COLLECTORD_REQUIRE_C_CLIENT"

E_ARGUMENT, E_JSON, E_MSGPACK, E_TOO_LARGE, E_CLOSED, E_TIMEOUT = -1, -2, -3, -4, -5, -6
E_REFUSED, E_TRANSPORT, E_MEMORY, E_BUFFER = -7, -8, -9, -10


def missing(path: str | None = None) -> str | None:
    """What is missing to build the C client here (tools looked up on ``path``,
    default $PATH), or None."""
    found = {tool: shutil.which(tool, path=path) for tool in ("cmake", "cc")}
    for tool, where in found.items():
        if where is None:
            return f"no {tool} on PATH"
    probe = subprocess.run(
        [str(found["cc"]), "-E", "-x", "c", "-"],
        input="#include <zmq.h>\n#include <msgpack.h>\n",
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"the headers zmq.h / msgpack.h are missing ({probe.stderr.strip()[:200]})"
    return None


def verdict(why: str, env: Mapping[str, str]) -> tuple[bool, str]:
    """For a toolchain that is missing (``why``): whether the tests must fail
    rather than skip (REQUIRE_ENV is 1 in ``env``), and the message naming what
    to install."""
    message = f"cannot build the C client: {why}; install `{INSTALL}` and a C compiler"
    if env.get(REQUIRE_ENV) == "1":
        return True, f"{message} ({REQUIRE_ENV}=1)"
    return False, message


#: MinGW's cross-compiler: the library's Windows branch is compiled (not
#: linked: there is no Windows libzmq here) by ``compile_for_windows``.
MINGW = "x86_64-w64-mingw32-gcc"
MINGW_INSTALL = "apt-get install -y gcc-mingw-w64-x86-64"
#: The flags CMakeLists.txt gives a MinGW build of the library.
MINGW_FLAGS = (
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-DCOLLECTORD_BUILDING",
    "-D__USE_MINGW_ANSI_STDIO=1",
)


def host_headers(target: Path) -> Path:
    """A folder holding only the host's zmq.h and msgpack-c headers (plain C,
    the same for Windows), so that a cross-compiler finds them and nothing
    else of the host's."""
    probe = subprocess.run(
        ["cc", "-M", "-x", "c", "-"],
        input="#include <zmq.h>\n#include <msgpack.h>\n",
        capture_output=True,
        text=True,
        check=True,
    )
    found = {Path(word) for word in probe.stdout.split() if word.endswith((".h", ".hpp"))}
    target.mkdir(parents=True, exist_ok=True)
    for header in found:
        if header.name in ("zmq.h", "msgpack.h"):
            (target / header.name).symlink_to(header)
            if header.name == "msgpack.h":
                (target / "msgpack").symlink_to(header.parent / "msgpack")
    return target


def compile_for_windows(compiler: str, headers: Path, objects: Path) -> list[str]:
    """Compile every source of clients/c and its example for Windows; the
    compiler's complaints, one entry per file that failed."""
    failures = []
    objects.mkdir(parents=True, exist_ok=True)
    for source in [*sorted((SOURCE / "src").glob("*.c")), SOURCE / "examples" / "example.c"]:
        result = subprocess.run(
            [
                compiler,
                *MINGW_FLAGS,
                "-I",
                str(SOURCE / "include"),
                "-I",
                str(headers),
                "-c",
                str(source),
                "-o",
                str(objects / f"{source.stem}.o"),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            failures.append(f"{source.name}:\n{result.stderr}")
    return failures


def build(target: Path) -> Path:
    """Configure and build clients/c into ``target``, as the docs say; return it."""
    for command in (
        ["cmake", "-S", str(SOURCE), "-B", str(target)],
        ["cmake", "--build", str(target)],
    ):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return target


def library_path(build_dir: Path) -> Path:
    (found,) = [path for path in build_dir.glob("libcollectord.so*") if not path.is_symlink()]
    return found


class CError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


_P = ctypes.c_void_p
_S = ctypes.c_char_p
_N = ctypes.c_size_t
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "collectord_version": (_S, []),
    "collectord_strerror": (_S, [ctypes.c_int]),
    "collectord_last_error": (_S, []),
    "collectord_client_error": (ctypes.c_int, [_P, _S, _N]),
    "collectord_open": (ctypes.c_int, [ctypes.POINTER(_P), _S, _S, _S, ctypes.c_uint64]),
    "collectord_open_secure": (
        ctypes.c_int,
        [ctypes.POINTER(_P), _S, _S, _S, ctypes.c_uint64, _S, _S],
    ),
    "collectord_new": (_P, [_S, _S, _S, ctypes.c_uint64]),
    "collectord_close": (ctypes.c_int, [_P, ctypes.c_double]),
    "collectord_session": (_S, [_P]),
    "collectord_set_float": (ctypes.c_int, [_P, _S, _S, ctypes.c_double]),
    "collectord_set_int": (ctypes.c_int, [_P, _S, _S, ctypes.c_int64]),
    "collectord_set_bool": (ctypes.c_int, [_P, _S, _S, ctypes.c_int]),
    "collectord_set_text": (ctypes.c_int, [_P, _S, _S, _S, _N]),
    "collectord_set_msgpack": (ctypes.c_int, [_P, _S, _S, _S, _N]),
    "collectord_set_json": (ctypes.c_int, [_P, _S, _S, _S, _N]),
    "collectord_set_params_msgpack": (ctypes.c_int, [_P, _S, _S, _N]),
    "collectord_set_params_json": (ctypes.c_int, [_P, _S, _S, _N]),
    "collectord_add_float": (ctypes.c_int, [_P, _S, ctypes.c_double]),
    "collectord_add_int": (ctypes.c_int, [_P, _S, ctypes.c_int64]),
    "collectord_add_bool": (ctypes.c_int, [_P, _S, ctypes.c_int]),
    "collectord_add_text": (ctypes.c_int, [_P, _S, _S, _N]),
    "collectord_add_floats": (ctypes.c_int, [_P, _S, ctypes.POINTER(ctypes.c_double), _N]),
    "collectord_add_ints": (ctypes.c_int, [_P, _S, ctypes.POINTER(ctypes.c_int64), _N]),
    "collectord_add_msgpack": (ctypes.c_int, [_P, _S, _S, _N]),
    "collectord_add_json": (ctypes.c_int, [_P, _S, _S, _N]),
    "collectord_declare_stream": (
        ctypes.c_int,
        [_P, _S, ctypes.POINTER(_S), _N, _S, ctypes.POINTER(_S)],
    ),
    "collectord_declare_stream_json": (ctypes.c_int, [_P, _S, _S, _S, _S]),
    "collectord_append_rows": (ctypes.c_int, [_P, _S, _P, ctypes.c_uint64, _N]),
    "collectord_sync": (ctypes.c_int, [_P, ctypes.c_double]),
    "collectord_stop": (ctypes.c_int, [_P, _S, ctypes.c_double, _S, _N, ctypes.POINTER(_N)]),
    "collectord_name_experiment": (ctypes.c_int, [_P, _S, ctypes.c_double]),
    "collectord_restore_msgpack": (
        ctypes.c_int,
        [_P, _S, ctypes.c_double, _S, _N, ctypes.POINTER(_N)],
    ),
    "collectord_unconfirmed": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_uint64)]),
    "collectord_overflowed": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_uint64)]),
    "collectord_last_seq": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_uint64)]),
}


def load(build_dir: Path) -> ctypes.CDLL:
    """The built library with every function's prototype declared."""
    library = ctypes.CDLL(os.fspath(library_path(build_dir)))
    for name, (restype, argtypes) in _PROTOTYPES.items():
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = argtypes
    return library


class CClient:
    """One collectord_client handle; each method raises CError on a failure code."""

    def __init__(
        self,
        library: ctypes.CDLL,
        name: str,
        data: str,
        control: str,
        buffer: int = 0,
        curve: tuple[Path, Path] | None = None,
    ) -> None:
        """``curve``: the client's secret key file and the daemon's public key file."""
        self.lib = library
        self.handle = _P()
        args = [ctypes.byref(self.handle), name.encode(), data.encode(), control.encode(), buffer]
        if curve is None:
            self._check(library.collectord_open(*args))
        else:
            keys = [os.fsencode(path) for path in curve]
            self._check(library.collectord_open_secure(*args, *keys))

    @property
    def session(self) -> str:
        return str(self.lib.collectord_session(self.handle).decode())

    def _check(self, code: int) -> None:
        if code != 0:
            raise CError(code, self.lib.collectord_last_error().decode())

    def call(self, function: str, *args: Any) -> None:
        """``collectord_<function>(handle, *args)``, str arguments as UTF-8."""
        encoded = [arg.encode() if isinstance(arg, str) else arg for arg in args]
        self._check(getattr(self.lib, f"collectord_{function}")(self.handle, *encoded))

    def counter(self, function: str) -> int:
        value = ctypes.c_uint64()
        self.call(function, ctypes.byref(value))
        return value.value

    def stop(self, reason: str = "", timeout: float = 60.0) -> str:
        buffer = ctypes.create_string_buffer(4096)
        needed = _N()
        self.call("stop", reason, timeout, buffer, len(buffer), ctypes.byref(needed))
        assert needed.value == len(buffer.value) + 1
        return buffer.value.decode()

    def restore(self, node: str, timeout: float = 10.0) -> bytes:
        length = _N()
        try:
            self.call("restore_msgpack", node, timeout, None, 0, ctypes.byref(length))
        except CError as exc:
            if exc.code != E_BUFFER:
                raise
        buffer = ctypes.create_string_buffer(length.value)
        self.call("restore_msgpack", node, timeout, buffer, length.value, ctypes.byref(length))
        return buffer.raw[: length.value]

    def close(self, timeout: float = 10.0) -> None:
        handle, self.handle = self.handle, _P()
        if handle:
            self._check(self.lib.collectord_close(handle, timeout))
