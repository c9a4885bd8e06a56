"""Batched UDP I/O: recvmmsg(2) and sendmmsg(2) through ctypes (Linux).

Python's socket module has one system call per datagram, and turns every source address
into a tuple and back.  Here one recvmmsg() fills up to ``VLEN`` preallocated slots, the
answers go out with one sendmmsg() per run, and each answer is addressed by pointing its
header at the sockaddr the kernel wrote on receipt: no address ever becomes a Python
object.  Per packet, Python only copies the query out of its slot and points an iovec at
the response.

Used when the C library has both calls and a self-test passes; otherwise the listener
keeps to recvfrom/sendto.  Responses are the same either way (the answer code is shared).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys

VLEN = 64  # datagrams per system call
SLOT = 65536  # receive buffer per datagram: more than any UDP payload, so none is cut short
_MSG_DONTWAIT = 0x40
_MSG_TRUNC = 0x20
_SOCKADDR_SIZE = 28  # sockaddr_in6; IPv4 sockets accept a longer length


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_BUFFER_FULL = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


def _load():
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


_CALLS = _load()
# Where a bytes object keeps its octets: checked against ctypes' own conversion at import.
_BYTES_DATA_OFFSET = bytes.__basicsize__ - 1


def _offset_ok() -> bool:
    probe = b"imrs-batchio-probe"
    return ctypes.cast(probe, ctypes.c_void_p).value == id(probe) + _BYTES_DATA_OFFSET


AVAILABLE = _CALLS is not None and _offset_ok() and os.environ.get("IMRS_NO_BATCHIO") != "1"


class BatchSocket:
    """Preallocated recvmmsg/sendmmsg state for one UDP socket."""

    def __init__(self, fd: int):
        self.fd = fd
        self._recvmmsg, self._sendmmsg = _CALLS
        self._buffer = ctypes.create_string_buffer(VLEN * SLOT)
        self._view = memoryview(self._buffer).cast("B")
        self._names = (ctypes.c_char * (_SOCKADDR_SIZE * VLEN))()
        self._recv_iov = (_Iovec * VLEN)()
        self._send_iov = (_Iovec * VLEN)()
        self._recv = (_Mmsghdr * VLEN)()
        self._send = (_Mmsghdr * VLEN)()
        base = ctypes.addressof(self._buffer)
        names = ctypes.addressof(self._names)
        for i in range(VLEN):
            self._recv_iov[i].iov_base = base + i * SLOT
            self._recv_iov[i].iov_len = SLOT
            hdr = self._recv[i].msg_hdr
            hdr.msg_name = names + i * _SOCKADDR_SIZE
            hdr.msg_iov = ctypes.pointer(self._recv_iov[i])
            hdr.msg_iovlen = 1
        for i in range(VLEN):
            self._recv[i].msg_hdr.msg_namelen = _SOCKADDR_SIZE
        self._used = 0  # slots the last receive filled
        self._recv_addr = ctypes.addressof(self._recv)
        self._send_addr = ctypes.addressof(self._send)
        for i in range(VLEN):  # send header i always uses iovec i; its address is set per reply
            self._send[i].msg_hdr.msg_iov = ctypes.pointer(self._send_iov[i])
            self._send[i].msg_hdr.msg_iovlen = 1
        # Views to read and write header fields without ctypes objects: an mmsghdr is 64 octets,
        # msg_name at octet 0, msg_namelen at 8, msg_flags at 48, msg_len at 56.
        self._recv_words = memoryview(self._recv).cast("B").cast("I")
        self._send_words = memoryview(self._send).cast("B").cast("I")
        self._send_quads = memoryview(self._send).cast("B").cast("Q")
        self._send_iov_quads = memoryview(self._send_iov).cast("B").cast("Q")
        self._names_addr = names

    def receive(self) -> list[bytes]:
        """Up to VLEN datagrams waiting on the socket (empty when none)."""
        words = self._recv_words
        for i in range(0, self._used * 16, 16):
            words[i + 2] = _SOCKADDR_SIZE  # msg_namelen is in/out: restore what the last call set
        n = self._recvmmsg(self.fd, self._recv_addr, VLEN, _MSG_DONTWAIT, None)
        self._used = max(0, n)
        if n <= 0:
            if n < 0 and ctypes.get_errno() not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            return []
        view = self._view
        out = []
        for i in range(n):
            if words[i * 16 + 12] & _MSG_TRUNC:
                out.append(b"")  # cut short (not possible over IP, but on other sockets): junk, dropped
                continue
            start = i * SLOT
            out.append(view[start : start + words[i * 16 + 14]].tobytes())
        return out

    def peers(self) -> bytes:
        """The sockaddrs the last receive() wrote, ``SOCKADDR_SIZE`` octets per datagram: the
        packed source address of datagram i is at ``i * SOCKADDR_SIZE + 4`` (IPv4, 4 octets)
        or ``+ 8`` (IPv6, 16 octets)."""
        return bytes(self._names[: self._used * _SOCKADDR_SIZE])

    def reply(self, responses: list[bytes | None]) -> int:
        """Send responses[i] to the sender of datagram i of the last receive(); None sends nothing."""
        recv_words = self._recv_words
        send_words = self._send_words
        send_quads = self._send_quads
        iov = self._send_iov_quads
        names = self._names_addr
        count = 0
        for i, response in enumerate(responses):
            if response is None:
                continue
            send_quads[count * 8] = names + i * _SOCKADDR_SIZE
            send_words[count * 16 + 2] = recv_words[i * 16 + 2]
            iov[count * 2] = id(response) + _BYTES_DATA_OFFSET  # ``responses`` keeps them alive
            iov[count * 2 + 1] = len(response)
            count += 1
        sent = done = 0
        while done < count:
            n = self._sendmmsg(self.fd, self._send_addr + done * 64, count - done, _MSG_DONTWAIT)
            if n > 0:
                done += n
                sent += n
                continue
            code = ctypes.get_errno() if n < 0 else 0
            if code == errno.EINTR:
                continue
            if n == 0 or code in _BUFFER_FULL:
                break  # the socket's buffer is full: the rest are dropped, like lost packets
            done += 1  # this one's destination is refused (no route, a firewall): the rest still go
        return sent


SOCKADDR_SIZE = _SOCKADDR_SIZE
