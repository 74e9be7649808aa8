"""Coverage-guided fuzzing of the packet parsers and the RFC 7915 translator.

Run (atheris / libFuzzer, coverage-guided; stop with Ctrl-C, a finding stops the run and
writes crash-<sha1> into the current directory):

    .venv/bin/python tools/fuzz_xlat.py --seeds /tmp/cjb-fuzz-corpus     # once: seed frames
    .venv/bin/python tools/fuzz_xlat.py /tmp/cjb-fuzz-corpus -max_total_time=600

    .venv/bin/python tools/fuzz_xlat.py crash-<sha1>                   # replay one finding

Without atheris (or with --hypothesis) the same property runs under hypothesis instead:

    .venv/bin/python tools/fuzz_xlat.py --hypothesis --examples 200000

Input encoding: byte 0 picks the direction (bit 0: 0 = from the LAN, 1 = from the service
link) and the path (bit 1: 1 = the fast path, 0 = the reference path); the rest is one
Ethernet frame. Bits 2-3 = 1 / 2 also hand the rest, as a UDP payload, to the mDNS / SSDP
ALG rewriters (gateway/xlat/alg) both ways. The properties checked for every input
(`check_one`):

* no parser raises: parse_ethernet/ipv4/ipv6/arp/icmp/udp/tcp/neighbor_message and
  walk_extensions return a value or an Invalid for any bytes; the ALGs return an outcome;
* the translator never swallows an exception (no INTERNAL_ERROR drop; the reference path is
  re-run unguarded so the finding carries the real traceback);
* every input is accounted for: frames out, or a named drop;
* every frame the translator emits is itself acceptable input to the other direction.

Anything found becomes a regression test: add the input to FINDINGS in
tests/resilience/test_fuzz.py (and the xfail-strict test naming the bug, until it is fixed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class FuzzFinding(AssertionError):
    """A property of check_one failed for this input; the message says which."""


def _imports() -> None:
    global Direction, DropReason, Translator, XlatConfig, Invalid, PARSERS, walk_extensions, ALGS
    from cjb.common.packet.arp import parse_arp
    from cjb.common.packet.errors import Invalid
    from cjb.common.packet.ethernet import parse_ethernet
    from cjb.common.packet.icmp import parse_icmp
    from cjb.common.packet.ipv4 import parse_ipv4
    from cjb.common.packet.ipv6 import parse_ipv6, walk_extensions
    from cjb.common.packet.ndp import parse_neighbor_message
    from cjb.common.packet.transport import parse_tcp, parse_udp
    from cjb.gateway.xlat import Direction, DropReason, Translator, XlatConfig
    from cjb.gateway.xlat.alg import mdns, ssdp

    ALGS = {
        1: (mdns.rewrite_to_service, mdns.rewrite_to_lan),
        2: (ssdp.rewrite_to_service, ssdp.rewrite_to_lan),
    }

    PARSERS = (
        parse_ethernet,
        parse_ipv4,
        lambda d: parse_ipv4(d, quoted=True),
        parse_ipv6,
        lambda d: parse_ipv6(d, quoted=True),
        parse_arp,
        parse_icmp,
        parse_udp,
        parse_tcp,
        parse_neighbor_message,
    )


def check_one(data: bytes) -> None:
    """Raise FuzzFinding (or the parser's own exception) when a property fails."""
    if not data:
        return
    mode, frame = data[0], data[1:]
    for rewrite in ALGS.get((mode >> 2) & 3, ()):
        for limit in (1452, 64):  # a full link, and one that forces trimming
            rewrite(frame, limit)  # an exception here is the finding
    for parse in PARSERS:
        parse(frame)  # an exception here is the finding
    if len(frame) >= 1:
        walk_extensions(frame, frame[0], len(frame))
    direction = Direction.TO_LAN if mode & 1 else Direction.TO_SERVICE
    translator = Translator(XlatConfig(), fast_path=bool(mode & 2))
    result = translator.translate(frame, direction)
    if result.drop is DropReason.INTERNAL_ERROR:
        translator._dispatch(frame, direction)  # unguarded: raise the real exception
        raise FuzzFinding(f"INTERNAL_ERROR drop but the reference path did not raise: {data!r}")
    if not result.emits and result.drop is None:
        raise FuzzFinding(f"input neither emitted nor dropped: {data!r}")
    back = Direction.TO_SERVICE if direction is Direction.TO_LAN else Direction.TO_LAN
    for emit in result.emits:
        again = Translator(XlatConfig()).translate(emit.frame, back)
        if again.drop is DropReason.INTERNAL_ERROR:
            raise FuzzFinding(f"emitted frame {emit.frame!r} crashes the other direction")


def write_seeds(where: Path) -> int:
    """Valid frames of both directions (the malformed corpus' seeds) as a libFuzzer corpus."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_xlat_malformed_corpus import _v4_seeds, _v6_seeds

    where.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, message in enumerate(_alg_seeds()):
        (where / f"seed-alg-{i:03d}").write_bytes(message)
        n += 1
    for mode_base, seeds in ((0, _v4_seeds()), (1, _v6_seeds())):
        for i, frame in enumerate(seeds):
            for fast in (0, 2):
                (where / f"seed-{mode_base}-{fast}-{i:03d}").write_bytes(
                    bytes([mode_base | fast]) + frame
                )
                n += 1
    return n


def _alg_seeds() -> list[bytes]:
    """An mDNS answer with an IPv4 and an IPv6 address, an SSDP NOTIFY with a LOCATION."""
    import dns.message
    import dns.rrset

    answer = dns.message.Message()
    answer.flags = 0x8400
    answer.answer.append(
        dns.rrset.from_text("_http._tcp.local.", 120, "IN", "PTR", "p._http._tcp.local.")
    )
    answer.additional.append(dns.rrset.from_text("p.local.", 120, "IN", "A", "192.168.0.50"))
    answer.additional.append(dns.rrset.from_text("p.local.", 120, "IN", "AAAA", "fe80::c0a8:32"))
    notify = (
        b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\n"
        b"NTS: ssdp:alive\r\nLOCATION: http://192.168.0.50:80/desc.xml\r\n\r\n"
    )
    return [bytes([4 | d]) + answer.to_wire() for d in (0, 1)] + [
        bytes([8 | d]) + notify for d in (0, 1)
    ]


def run_hypothesis(examples: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.binary(min_size=1, max_size=1600))
    def prop(data: bytes) -> None:
        check_one(data)

    prop()
    print(f"hypothesis: {examples} examples, no finding")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    parser.add_argument("--seeds", type=Path)
    parser.add_argument("--hypothesis", action="store_true")
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("-h", "--help", action="store_true")
    ours, rest = parser.parse_known_args(argv[1:])
    if ours.help:
        print(__doc__)
        return 0
    if ours.seeds is not None:
        _imports()
        print(f"wrote {write_seeds(ours.seeds)} seed inputs to {ours.seeds}")
        return 0
    try:
        import atheris
    except ImportError:
        atheris = None
    if ours.hypothesis or atheris is None:
        _imports()
        run_hypothesis(ours.examples)
        return 0
    with atheris.instrument_imports(include=["cjb"]):
        _imports()
    atheris.Setup([argv[0], *rest], check_one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
