"""Writes the seed corpora in fuzz/seeds/ (checked in; rerun after changing
an input layout described in fuzz/src/*.rs)."""

import struct
from pathlib import Path

HERE = Path(__file__).parent
PAGE = 4096
READY = 0x52445921

DICTS = [
    "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }",
    "{'descr': [('a', '<i8'), ('b', '<f4', (2,))], 'fortran_order': False, 'shape': (5,), }",
    "{'descr': [(('title', 'x'), '|u1'), ('y', [('z', '>i2')], (2, 3))], 'fortran_order': True, 'shape': (0, 7), }",
    "{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (), }",
    "{'descr': '|S10', 'fortran_order': True, 'shape': (2, 1, 2), }",
    "{'descr': '<U3', 'fortran_order': False, 'shape': (4,), }",
]


def write(target: str, name: str, data: bytes) -> None:
    d = HERE / "seeds" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main() -> None:
    for i, text in enumerate(DICTS):
        write("header", f"dict-v1-{i}", b"\x01" + text.encode())
    write("header", "dict-v3-unicode", b"\x02" + "{'descr': [('ünï', '<c16')], 'fortran_order': False, 'shape': (2,), }".encode())
    prefix = b"\x93NUMPY\x01\x00" + struct.pack("<H", PAGE - 10)
    write("header", "page-v1", b"\x00" + prefix + DICTS[0].encode())
    for i, descr in enumerate(["'<f8'", "[('a', '<i4'), ('b', '|V3', 2)]", "'<m8[us]'", "'|b1'"]):
        write("header", f"descr-{i}", b"\x03" + descr.encode())
    write("header", "literal", b"\x04" + b"{'k': [1, -2, (3,), None, True, \"it's\", '\\x41\\u00e9']}")

    for i, (text, data_len) in enumerate([(DICTS[0], 96), (DICTS[1], 5 * 16), (DICTS[2], 0)]):
        ctl = bytearray(96)
        ctl[0:8] = b"NDSHMCTL"
        struct.pack_into("<IIII", ctl, 8, 1, READY, 0, PAGE)
        struct.pack_into("<QQIxxxxQQQ", ctl, 24, data_len, 0x1234, 4242, 777, 1_700_000_000, 0)
        write("control", f"valid-{i}", b"\x03" + bytes(8) + bytes(ctl) + text.encode())
    write("control", "raw-length", b"\x02" + struct.pack("<Q", 3 * PAGE) + bytes(ctl) + DICTS[2].encode())

    for i, raw in enumerate([b"\x00" * 16, b"\x05\x08\x00\x01\x0a\x08", bytes(range(40)), b"\xff" * 24]):
        write("view", f"bytes-{i}", raw)


if __name__ == "__main__":
    main()
