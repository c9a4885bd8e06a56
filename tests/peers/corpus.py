"""Deterministic query corpus for the NSD differential test.

build_corpus(zonefile, seed) reads the zone with dnspython and returns a list
of Entry objects (wire-format queries with a short category label).  The same
(zonefile, seed) always gives byte-identical queries.

Categories (prefix before "/" is the family):
  tld/<TYPE>         every TLD x {NS, DS, A, AAAA} x DO on/off
  tld-other/<TYPE>   TLD owner names with other types (SOA, NSEC, RRSIG, ANY...)
  apex/<TYPE>        `.` SOA NS DNSKEY NSEC ZONEMD RRSIG ANY A TXT ... in many EDNS variants
  nx/<kind>          names under TLDs that do not exist (random, typo, private-use,
                     sort-edge, digits/hyphens, wildcard labels, long names)
  deep/<kind>        names below delegations, glue names (x.root-servers.net ...)
  chaos/<name>       CH TXT version.bind etc. (compared structurally only)
  class/<CLASS>      qclass ANY, NONE, HS, CH (non-chaos names), CLASS42
  qtype-unknown/...  TYPE666, TYPE65280, TYPE65535, TYPE0
  qtype-meta/<TYPE>  AXFR IXFR MAILA MAILB ANY OPT TKEY TSIG TYPE128
  flags/<FLAGS>      RD, CD, AD, RD+CD set in the query
  edns/<kind>        BADVERS, unknown option, NSID, cookie, tiny payloads, Z bits
  opcode/<OPCODE>    non-QUERY opcodes
Besides the flags/ family, RD and CD are also sprinkled over all entries,
EDNS payload sizes (none, 512, 1232, 4096) are spread over the corpus, and
about 15 % of the query names are in mixed case (0x20).
"""

from __future__ import annotations

import functools
import random
import string
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdatatype
import dns.zone

IN = dns.rdataclass.IN
T = dns.rdatatype

NO_EDNS = None
PAYLOADS_ALL = (NO_EDNS, 512, 1232, 4096)
PAYLOADS_EDNS = (512, 1232, 4096)


@dataclass(frozen=True)
class Entry:
    idx: int
    category: str
    wire: bytes
    desc: str           # human readable: "ExAmple.COM. IN DS +do bufsize=1232 +rd"
    mode: str = "full"  # "full" or "structure" (rdata/TTL not compared: CHAOS identity strings)


@dataclass(frozen=True)
class ZoneInfo:
    tlds: tuple[dns.name.Name, ...]        # delegated TLDs, canonical order
    glue: tuple[dns.name.Name, ...]        # owner names of A/AAAA glue
    apex_types: tuple[int, ...]
    glue_types: dict                       # glue owner name -> frozenset of its address types


@functools.lru_cache(maxsize=8)
def zone_info(zonefile: str) -> ZoneInfo:
    z = dns.zone.from_file(str(zonefile), origin=dns.name.root, relativize=False, check_origin=True)
    tlds, glue = [], []
    glue_types = {}
    apex_types: set[int] = set()
    for name, node in z.nodes.items():
        types = {rds.rdtype for rds in node.rdatasets}
        if name == dns.name.root:
            apex_types = types
            continue
        if len(name) == 2 and T.NS in types:
            tlds.append(name)
        if T.A in types or T.AAAA in types:
            glue.append(name)
            glue_types[name] = frozenset(types & {T.A, T.AAAA})
    tlds.sort()
    glue.sort()
    return ZoneInfo(tuple(tlds), tuple(glue), tuple(sorted(apex_types)), glue_types)


def _mix_case(rng: random.Random, name: dns.name.Name) -> dns.name.Name:
    labels = []
    for label in name.labels:
        b = bytearray(label)
        for i, c in enumerate(b):
            if 0x61 <= c <= 0x7A and rng.random() < 0.5:
                b[i] = c - 0x20
            elif 0x41 <= c <= 0x5A and rng.random() < 0.5:
                b[i] = c + 0x20
        labels.append(bytes(b))
    mixed = dns.name.Name(labels)
    return mixed


class _Builder:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.entries: list[Entry] = []

    def add(self, category: str, name: dns.name.Name | str, rdtype: int | str, rdclass: int = IN, *,
            payload: int | None | str = "random", do: bool | None = None, edns_version: int = 0,
            rd: bool | None = None, cd: bool | None = None, ad: bool = False,
            options: list | None = None, opcode: int = dns.opcode.QUERY, ednsflags_extra: int = 0,
            mode: str = "full", mix: bool | None = None) -> None:
        rng = self.rng
        if isinstance(name, str):
            name = dns.name.from_text(name)
        if isinstance(rdtype, str):
            rdtype = T.from_text(rdtype)
        if do is None:
            do = rng.random() < 0.5
        if payload == "random":
            payload = rng.choice(PAYLOADS_EDNS if do or options or edns_version else PAYLOADS_ALL)
        if rd is None:
            rd = rng.random() < 0.08
        if cd is None:
            cd = rng.random() < 0.08
        if mix is None:
            mix = rng.random() < 0.15
        if mix:
            name = _mix_case(rng, name)
        flags = 0
        if rd:
            flags |= dns.flags.RD
        if cd:
            flags |= dns.flags.CD
        if ad:
            flags |= dns.flags.AD
        use_edns = payload is not None
        msg = dns.message.make_query(name, rdtype, rdclass, use_edns=edns_version if use_edns else False,
                                     want_dnssec=do and use_edns, payload=payload if use_edns else None,
                                     options=options if use_edns else None, id=rng.getrandbits(16),
                                     flags=flags)
        if ednsflags_extra and use_edns:
            msg.use_edns(edns_version, msg.ednsflags | ednsflags_extra, payload, options=options)
        msg.set_opcode(opcode)
        wire = msg.to_wire()
        parts = [name.to_text(), dns.rdataclass.to_text(rdclass), T.to_text(rdtype)]
        if opcode != dns.opcode.QUERY:
            parts.append("opcode=" + dns.opcode.to_text(opcode))
        if use_edns:
            parts.append(f"edns{edns_version} bufsize={payload}" + (" +do" if do else ""))
            if ednsflags_extra:
                parts.append(f"ednsflags+={ednsflags_extra:#06x}")
            for o in options or []:
                parts.append(f"opt{int(o.otype)}")
        else:
            parts.append("noedns")
        parts += [f for f, on in (("+rd", rd), ("+cd", cd), ("+ad", ad)) if on]
        self.entries.append(Entry(len(self.entries), category, wire, " ".join(parts), mode))


def _label(rng: random.Random, n: int, alphabet: str = string.ascii_lowercase) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _typos(rng: random.Random, tld: str) -> list[str]:
    out = []
    if len(tld) >= 2:
        i = rng.randrange(len(tld) - 1)
        out.append(tld[:i] + tld[i + 1] + tld[i] + tld[i + 2:])            # swap
        j = rng.randrange(len(tld))
        out.append(tld[:j] + tld[j + 1:])                                  # drop
    k = rng.randrange(len(tld) + 1)
    out.append(tld[:k] + rng.choice(string.ascii_lowercase) + tld[k:])    # insert
    m = rng.randrange(len(tld))
    out.append(tld[:m] + rng.choice(string.ascii_lowercase) + tld[m + 1:])  # replace
    return [t for t in out if t and not t.startswith("-") and not t.endswith("-")]


def _ldh_label(rng: random.Random, n: int) -> str:
    """Letters-digits-hyphen label of exactly n octets, no leading/trailing hyphen."""
    alnum = string.ascii_lowercase + string.digits
    if n <= 2:
        return _label(rng, n, alnum)
    return rng.choice(alnum) + _label(rng, n - 2, alnum + "-") + rng.choice(alnum)


def _long_name(rng: random.Random, total_wire_len: int, suffix: str = "") -> dns.name.Name:
    """A name whose wire length is exactly total_wire_len (<= 255)."""
    base = dns.name.from_text(suffix) if suffix else dns.name.root
    need = total_wire_len - len(base.to_wire())
    labels = []
    while need > 0:
        n = min(63, need - 1)
        if need - (n + 1) == 1:  # can't leave a 1-octet remainder (a label needs >= 2)
            n -= 1
        labels.append(_ldh_label(rng, n))
        need -= n + 1
    name = dns.name.Name([lab.encode() for lab in labels] + list(base.labels))
    assert len(name.to_wire()) == total_wire_len
    return name


PRIVATE_TLDS = ["local", "home", "corp", "lan", "internal", "localdomain", "localhost", "invalid",
                "test", "example", "onion", "intranet", "private", "belkin", "domain", "router",
                "dlink", "gateway", "wpad", "workgroup", "arpa-", "home-", "cmo", "comm", "nett",
                "ogr", "con", "ccom", "ocm", "orgg", "dom", "localnet", "mail", "ads", "prod",
                "dev-", "site-", "null", "none", "undefined", "unknown", "openstacklocal", "alt"]
NX_TYPES = ["A", "AAAA", "NS", "DS", "SOA", "TXT", "MX", "ANY", "PTR", "SRV", "DNSKEY", "NSEC",
            "HTTPS", "SVCB", "CNAME", "NAPTR", "CAA"]


def build_corpus(zonefile: str | Path, seed: int = 1, *, scale: float = 1.0) -> list[Entry]:
    info = zone_info(str(Path(zonefile).resolve()))
    b = _Builder(seed)
    rng = b.rng
    tlds = list(info.tlds)
    tld_set = {t.to_text().lower() for t in tlds}

    def n(k: int) -> int:
        return max(1, int(k * scale))

    # ---- every TLD x {NS, DS, A, AAAA} x DO on/off
    for tld in tlds:
        for t in ("NS", "DS", "A", "AAAA"):
            for do in (False, True):
                b.add(f"tld/{t}", tld, t, do=do)

    # ---- the apex
    apex_types = ["SOA", "NS", "DNSKEY", "NSEC", "ZONEMD", "RRSIG", "ANY", "A", "TXT", "AAAA", "DS",
                  "MX", "CDS", "CDNSKEY", "NSEC3PARAM", "CNAME", "PTR", "HTTPS"]
    for t in apex_types:
        for payload in PAYLOADS_ALL:
            for do in (False, True):
                if do and payload is None:
                    continue
                b.add(f"apex/{t}", ".", t, payload=payload, do=do, rd=False, cd=False)
        b.add(f"apex/{t}", ".", t, payload=1232, do=True, rd=True, cd=True)

    # ---- other types at TLD owner names (authoritative NSEC/DS/RRSIG at the parent side)
    other = ["SOA", "TXT", "DNSKEY", "NSEC", "RRSIG", "ANY", "MX", "CNAME", "NSEC3", "CDS", "PTR",
             "DNAME", "HTTPS"]
    for _ in range(n(650)):
        t = rng.choice(other)
        b.add(f"tld-other/{t}", rng.choice(tlds), t)

    # ---- non-existent TLDs  (>= 2,000 names)
    def nx_add(kind: str, name: dns.name.Name | str) -> None:
        if isinstance(name, str):
            name = dns.name.from_text(name)
        b.add(f"nx/{kind}", name, rng.choice(NX_TYPES))

    def fresh(label: str) -> bool:
        return label.lower() + "." not in tld_set

    for _ in range(n(860)):
        lab = _label(rng, rng.randint(2, 14))
        if fresh(lab):
            nx_add("random", lab + ".")
            if rng.random() < 0.3:
                nx_add("random", f"{_label(rng, rng.randint(1, 8))}.{lab}.")
    for _ in range(n(450)):
        base = rng.choice(tlds).to_text().rstrip(".")
        for typo in _typos(rng, base):
            if fresh(typo):
                sub = rng.choice(["", "www.", "mail.", "example.", f"{_label(rng, 5)}."])
                nx_add("typo", f"{sub}{typo}.")
                break
    for p in PRIVATE_TLDS:
        for sub in ("", "www.", "wpad.", "_ldap._tcp.dc._msdcs.", "printer.", f"{_label(rng, 6)}."):
            if fresh(p):
                nx_add("private", f"{sub}{p}.")
    first = tlds[0].to_text()
    edge = ["a.", "aa.", "aaa0.", "0.", "00.", "-.", "0-0.", "a-.", "\\000.", "\\001a.", "!.", "_.",
            "_tcp.", "zz.", "zzz.", "zzzzzzzzzz.", "zx.", "zy.", "zwa.", "zw0.", "~.", "\\127.",
            "\\255.", "\\255\\255\\255.", "xn--zzzzzz.", "xn--.", "xn--0.", "zz\\255."]
    for _ in range(n(40)):
        edge.append(first.rstrip(".")[:-1] + _label(rng, 1) + ".")  # near the first TLD
        edge.append(_label(rng, rng.randint(1, 3), "z") + _label(rng, rng.randint(1, 4)) + ".")
    for e in edge:
        name = dns.name.from_text(e)
        if name.to_text().lower() not in tld_set:
            nx_add("sort-edge", name)
            nx_add("sort-edge", name)
    for _ in range(n(300)):
        lab = _label(rng, rng.randint(1, 10), string.ascii_lowercase + string.digits + "-")
        lab = lab.strip("-") or "0"
        if rng.random() < 0.3:
            lab = str(rng.randint(0, 999999))
        if fresh(lab):
            nx_add("digits-hyphens", f"{_label(rng, 3)}.{lab}." if rng.random() < 0.3 else f"{lab}.")
    for _ in range(n(150)):
        tld = rng.choice(tlds).to_text()
        choice = rng.randrange(5)
        if choice == 0:
            nx_add("wildcard", "*.")
        elif choice == 1:
            nx_add("wildcard", f"*.{_label(rng, 5)}.")
        elif choice == 2:
            b.add("deep/wildcard", f"*.{tld}", rng.choice(NX_TYPES))  # below a delegation
        elif choice == 3:
            b.add("deep/wildcard", f"www.*.{tld}", rng.choice(NX_TYPES))
        else:
            nx_add("wildcard", f"*.*.{_label(rng, 4)}.")
    for _ in range(n(120)):
        total = rng.choice([200, 240, 250, 253, 254, 255])
        if rng.random() < 0.5:
            b.add("deep/long", _long_name(rng, total, rng.choice(tlds).to_text()), rng.choice(NX_TYPES))
        else:
            name = _long_name(rng, total)
            if name[-2].decode().lower() + "." not in tld_set:
                nx_add("long", name)
    for _ in range(n(40)):  # 63-octet TLD labels
        nx_add("long", _label(rng, 63) + ".")

    # ---- below delegations
    for _ in range(n(1000)):
        tld = rng.choice(tlds).to_text()
        b.add("deep/www", f"www.example.{tld}", rng.choice(["A", "AAAA", "NS", "DS", "MX", "TXT", "ANY"]))
    for _ in range(n(600)):
        tld = rng.choice(tlds).to_text()
        depth = rng.randint(2, 6)
        name = ".".join(_label(rng, rng.randint(1, 6)) for _ in range(depth)) + "." + tld
        b.add("deep/multi", name, rng.choice(NX_TYPES))
    for fixed in ("www.example.com.", "a.b.c.d.co.uk.", "a.root-servers.net.", "a.gtld-servers.net.",
                  "ns1.google.com.", "example.org.", "www.iana.org.", "b.c.d.e.f.g.h.i.j.ru."):
        for t in ("A", "AAAA", "NS", "DS"):
            for do in (False, True):
                b.add("deep/fixed", fixed, t, do=do)
    for letter in "abcdefghijklm":
        for host in ("root-servers.net.", "gtld-servers.net."):
            for t in ("A", "AAAA"):
                b.add("deep/servers", f"{letter}.{host}", t)
    glue = list(info.glue)
    for g in rng.sample(glue, min(len(glue), n(2200))):
        b.add("deep/glue", g, rng.choice(["A", "AAAA", "A", "AAAA", "NS", "ANY", "DS", "TXT"]))

    # ---- CHAOS (identity strings differ by configuration: structural compare only)
    for nm in ("version.bind.", "hostname.bind.", "id.server.", "version.server.", "authors.bind.",
               "fortune.bind."):
        for _ in range(3):
            b.add(f"chaos/{nm.rstrip('.')}", nm, "TXT", dns.rdataclass.CH, mode="structure")
        b.add(f"chaos/{nm.rstrip('.')}", nm, "A", dns.rdataclass.CH, mode="structure")
        b.add(f"chaos/{nm.rstrip('.')}", nm, "ANY", dns.rdataclass.CH, mode="structure")
        b.add(f"chaos/{nm.rstrip('.')}", nm, "TXT", dns.rdataclass.IN)
    for nm in (".", "com.", "bind.", "server.", "foo.bind."):
        b.add("chaos/other", nm, rng.choice(["TXT", "SOA", "NS"]), dns.rdataclass.CH, mode="structure")

    # ---- odd query classes
    cls_names = [".", "com.", "org.", "a.root-servers.net.", "nosuchtld.", "www.example.com."]
    for cls in ("ANY", "NONE", "HS", "CLASS42", "RESERVED0", "CLASS65280"):
        c = dns.rdataclass.from_text(cls) if cls != "RESERVED0" else 0
        for nm in cls_names:
            for t in ("SOA", "NS", "A", "DS", "ANY"):
                b.add(f"class/{cls}", nm, t, c)

    # ---- unknown and meta query types
    for t in ("TYPE666", "TYPE65280", "TYPE65535", "TYPE0", "TYPE258", "TYPE32769"):
        for nm in (".", "com.", "nosuchtld.", "a.root-servers.net.", "www.example.com."):
            for do in (False, True):
                b.add(f"qtype-unknown/{t}", nm, t, do=do)
    for t in ("AXFR", "IXFR", "MAILA", "MAILB", "ANY", "OPT", "TKEY", "TSIG", "TYPE128", "TYPE200"):
        for nm in (".", "com.", "nosuchtld.", "a.root-servers.net."):
            for do in (False, True):
                b.add(f"qtype-meta/{t}", nm, t, do=do)

    # ---- header flags
    flag_names = [".", "com.", "uk.", "nosuchtld.", "www.example.com.", "a.root-servers.net."]
    for label, kw in (("RD", dict(rd=True, cd=False)), ("CD", dict(rd=False, cd=True)),
                      ("RD+CD", dict(rd=True, cd=True)), ("AD", dict(rd=False, cd=False, ad=True)),
                      ("RD+CD+AD", dict(rd=True, cd=True, ad=True))):
        for nm in flag_names + [rng.choice(tlds) for _ in range(n(20))]:
            for t in ("SOA", "NS", "DS", "A", "DNSKEY"):
                b.add(f"flags/{label}", nm, t, **kw)

    # ---- EDNS edge cases
    edns_names = [".", "com.", "nosuchtld.", "www.example.com."]
    for ver in (1, 2, 255):
        for nm in edns_names:
            for t in ("SOA", "NS", "DS"):
                for do in (False, True):
                    b.add("edns/badvers", nm, t, edns_version=ver, do=do)
    unknown_opts = [dns.edns.GenericOption(65001, b"\x01\x02\x03"),
                    dns.edns.GenericOption(0xFDE9, b""),
                    dns.edns.GenericOption(20, b"\xff" * 7),
                    dns.edns.GenericOption(0, b"")]
    for opt in unknown_opts:
        for nm in edns_names:
            for t in ("SOA", "NS", "DS"):
                b.add("edns/unknown-option", nm, t, options=[opt])
    for nm in edns_names:
        for t in ("SOA", "NS"):
            b.add("edns/nsid", nm, t, options=[dns.edns.GenericOption(dns.edns.NSID, b"")])
            b.add("edns/cookie", nm, t, options=[dns.edns.GenericOption(dns.edns.COOKIE, bytes(range(8)))])
            b.add("edns/padding", nm, t, options=[dns.edns.GenericOption(dns.edns.PADDING, b"\x00" * 16)])
            b.add("edns/ecs", nm, t, options=[dns.edns.ECSOption("192.0.2.0", 24)])
            for small in (0, 100, 511):
                b.add("edns/small-payload", nm, t, payload=small)
            b.add("edns/z-bits", nm, t, ednsflags_extra=0x4000, do=False)
            b.add("edns/z-bits", nm, t, ednsflags_extra=0x0001, do=True)

    # ---- opcodes
    for op in (1, 2, 3, 4, 5, 6, 15):
        for nm in (".", "com."):
            for pl in (None, 1232):
                b.add(f"opcode/{dns.opcode.to_text(op) if op in (1, 2, 4, 5) else op}", nm, "SOA",
                      payload=pl, do=False, opcode=op)

    return b.entries


def summary(entries: list[Entry]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in entries:
        out[e.category] = out.get(e.category, 0) + 1
    return dict(sorted(out.items()))


if __name__ == "__main__":  # python -m peers.corpus ZONEFILE [SEED]
    import sys

    zf = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/zones/testroot/root-2026082201.zone"
    sd = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    es = build_corpus(zf, sd)
    for cat, c in summary(es).items():
        print(f"{c:7d}  {cat}")
    print(f"{len(es):7d}  total")
