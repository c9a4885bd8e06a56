"""The C fast path (:mod:`imrs._fastpath`) in front of :meth:`CompiledAnswers.answer`.

The extension answers the common case (no EDNS options, a rendered variant, a cached shape)
by reading the structures :class:`~imrs.answer.compiled.CompiledAnswers` built, with the same
bytes; it returns None in every other case, and then the Python method decides (and renders
or caches what the next query will find).  The extension is optional: without a compiler at
install time, or with ``IMRS_NO_FASTC=1`` in the environment, :func:`make_answer` returns the
Python method itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable

try:
    from imrs import _fastpath
except ImportError:  # not built: the pure-Python path
    _fastpath = None

AnswerFunction = Callable[[bytes, bool, bool, "bytes | None"], "bytes | None"]


class _Stub:
    """An attribute holder standing in for the compiled structures in the self-check."""

    def __init__(self, **attributes) -> None:
        self.__dict__.update(attributes)


def _self_check() -> bool:
    """Does the extension read a minimal hand-made structure as the Python path would?"""
    if _fastpath is None:
        return False
    try:
        tails = tuple(tuple(bytes([0x84, rdcd, has_opt]) for rdcd in range(4)) for has_opt in (0, 1))
        variant = _Stub(fit_len=4, pointers=(), full=(tails, (b"BODY", b"BODY+OPT")), moved={}, cut={})
        answer_class = _Stub(variants=[variant, None, None, None])
        entry = _Stub(deeper=False, exact={6: answer_class}, exact_default=None, below=None, gaps=None,
                      gap_labels=None, referral=None)
        compiled = _Stub(names={b"\x00": entry}, _edns_size=1232, _caps=(1232, 1232))
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x06\x00\x01"
        if _fastpath.answer(compiled, query, False, False) != b"\x12\x34" + tails[0][1] + query[12:] + b"BODY":
            return False
        other = query[:-3] + b"\x02\x00\x01"  # NS: no class for it, no default
        with_options = query[:11] + b"\x01" + query[12:] + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x00"
        rejected = (b"", query[:-1], query + b"\x00", other, with_options, b"\xff" * 600)
        return all(_fastpath.answer(compiled, wire, tcp, False) is None for wire in rejected for tcp in (False, True))
    except Exception:  # noqa: BLE001 - a broken extension just stays unused
        return False


AVAILABLE: bool = _self_check()


def enabled() -> bool:
    """Is the C path to be used (built, self-checked, and not disabled by IMRS_NO_FASTC=1)?"""
    return AVAILABLE and os.environ.get("IMRS_NO_FASTC", "") != "1"


def make_answer(compiled) -> AnswerFunction:
    """``(wire, tcp, ipv6, peer) -> bytes | None`` for ``compiled`` (a CompiledAnswers): the C
    path first, then ``compiled.answer`` whenever the C path returns None.  Same results as
    ``compiled.answer`` alone; that method itself when the C path is not :func:`enabled`."""
    if not enabled():
        return compiled.answer
    fast = _fastpath.answer
    slow = compiled.answer

    def answer(wire: bytes, tcp: bool, ipv6: bool, peer: bytes | None = None) -> bytes | None:
        out = fast(compiled, wire, tcp, ipv6)
        if out is None:
            return slow(wire, tcp, ipv6, peer)
        return out

    return answer


if enabled():  # IMRS_NO_FASTC is read once, at import, for this one

    def answer(compiled, wire: bytes, tcp: bool, ipv6: bool, peer: bytes | None = None) -> bytes | None:
        """``compiled.answer(wire, tcp, ipv6, peer)``, by the C path when it can: for callers
        that hold no per-snapshot function (Snapshot is a frozen dataclass)."""
        out = _fastpath.answer(compiled, wire, tcp, ipv6)
        if out is None:
            return compiled.answer(wire, tcp, ipv6, peer)
        return out

else:

    def answer(compiled, wire: bytes, tcp: bool, ipv6: bool, peer: bytes | None = None) -> bytes | None:
        """``compiled.answer(wire, tcp, ipv6, peer)`` (the C path is off or not built)."""
        return compiled.answer(wire, tcp, ipv6, peer)
