"""ctypes on Debian's libbpf.so.1: open and load an object, program and map fds, map I/O
(for the VXLAN guard here and the gateway's kernel fast path).

No maintained PyPI loader works here (bcc needs kernel headers), and we need
only a handful of libbpf calls. libbpf 1.x returns NULL / -errno and sets errno.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os


class LibbpfError(OSError):
    """A libbpf call failed; the message names the call, the object and the errno."""


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            cdll = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise LibbpfError(
                f"cannot load {name}: {exc} (apt-get install -y --no-install-recommends libbpf1)"
            ) from None
        vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        for fn, res, args in (
            ("bpf_object__open_file", vp, [cp, vp]),
            ("bpf_object__load", i, [vp]),
            ("bpf_object__close", None, [vp]),
            ("bpf_object__find_program_by_name", vp, [vp, cp]),
            ("bpf_object__find_map_by_name", vp, [vp, cp]),
            ("bpf_program__fd", i, [vp]),
            ("bpf_map__fd", i, [vp]),
            ("bpf_map_update_elem", i, [i, vp, vp, ctypes.c_uint64]),
            ("bpf_map_lookup_elem", i, [i, vp, vp]),
            ("bpf_map_delete_elem", i, [i, vp]),
            ("bpf_map_get_next_key", i, [i, vp, vp]),
            ("bpf_obj_get_info_by_fd", i, [i, vp, ctypes.POINTER(ctypes.c_uint32)]),
            ("libbpf_num_possible_cpus", i, []),
        ):
            f = getattr(cdll, fn)
            f.restype = res
            f.argtypes = args
        _lib = cdll
    return _lib


def _err(what: str, ret: int | None = None) -> LibbpfError:
    code = -ret if ret is not None and ret < 0 else ctypes.get_errno()
    return LibbpfError(code, f"{what}: {os.strerror(code)} (errno {code})")


class BpfObject:
    """One loaded object: its programs and maps live as long as this (or an attachment)."""

    def __init__(self, path: str) -> None:
        self._lib = lib()
        obj = self._lib.bpf_object__open_file(path.encode(), None)
        if not obj:
            raise _err(f"open BPF object {path}")
        ret = self._lib.bpf_object__load(obj)
        if ret:
            self._lib.bpf_object__close(obj)
            raise _err(f"load BPF object {path} (verifier log above; root?)", ret)
        self._obj: int | None = obj
        self.path = path

    def close(self) -> None:
        if self._obj is not None:
            self._lib.bpf_object__close(self._obj)
            self._obj = None

    def _handle(self) -> int:
        if self._obj is None:
            raise LibbpfError(0, f"BPF object {self.path} is closed")
        return self._obj

    def program_fd(self, name: str) -> int:
        prog = self._lib.bpf_object__find_program_by_name(self._handle(), name.encode())
        if not prog:
            raise LibbpfError(0, f"{self.path}: no program {name!r}")
        return int(self._lib.bpf_program__fd(prog))

    def map_fd(self, name: str) -> int:
        m = self._lib.bpf_object__find_map_by_name(self._handle(), name.encode())
        if not m:
            raise LibbpfError(0, f"{self.path}: no map {name!r}")
        return int(self._lib.bpf_map__fd(m))


def prog_id(fd: int) -> int:
    """The kernel's id of a loaded program (what a tc filter dump reports)."""
    info = (ctypes.c_uint32 * 4)()  # struct bpf_prog_info: type, id, tag[8]
    size = ctypes.c_uint32(ctypes.sizeof(info))
    ret = lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    if ret:
        raise _err(f"prog info of fd {fd}", ret)
    return int(info[1])


def map_update(fd: int, key: bytes, value: bytes) -> None:
    ret = lib().bpf_map_update_elem(fd, key, value, 0)
    if ret:
        raise _err(f"update map fd {fd}", ret)


def map_lookup(fd: int, key: bytes, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    ret = lib().bpf_map_lookup_elem(fd, key, buf)
    if ret:
        raise _err(f"lookup in map fd {fd}", ret)
    return buf.raw


def map_delete(fd: int, key: bytes) -> None:
    ret = lib().bpf_map_delete_elem(fd, key)
    if ret:
        raise _err(f"map fd {fd}: delete an element", ret)


def map_keys(fd: int, size: int) -> list[bytes]:
    """Every key of a hash map (`size` bytes each)."""
    keys: list[bytes] = []
    prev = None
    buf = ctypes.create_string_buffer(size)
    while lib().bpf_map_get_next_key(fd, prev, buf) == 0:
        keys.append(buf.raw)
        prev = ctypes.create_string_buffer(buf.raw, size)
    return keys


def possible_cpus() -> int:
    n = int(lib().libbpf_num_possible_cpus())
    if n <= 0:
        raise _err("libbpf_num_possible_cpus", n)
    return n
