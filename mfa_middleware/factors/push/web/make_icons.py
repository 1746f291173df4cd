"""Writes icon-192.png and icon-512.png next to this file (run once: ``python make_icons.py``; the PNGs are
committed). The same padlock as icon.svg, drawn pixel by pixel with zlib only: a blue rounded square, a white
padlock, a blue keyhole. Not imported by the package."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

BLUE = (0x1D, 0x4E, 0xD8, 255)
WHITE = (255, 255, 255, 255)
CLEAR = (0, 0, 0, 0)


def inside_rounded(u: float, v: float, x0: float, y0: float, x1: float, y1: float, r: float) -> bool:
    if not (x0 <= u <= x1 and y0 <= v <= y1):
        return False
    cx = min(max(u, x0 + r), x1 - r)
    cy = min(max(v, y0 + r), y1 - r)
    return (u - cx) ** 2 + (v - cy) ** 2 <= r * r


def pixel(u: float, v: float) -> tuple[int, int, int, int]:
    if not inside_rounded(u, v, 0, 0, 1, 1, 0.1875):
        return CLEAR
    keyhole = (u - 0.5) ** 2 + (v - 0.59) ** 2 <= 0.045 ** 2 or (0.48 <= u <= 0.52 and 0.59 <= v <= 0.7)
    body = inside_rounded(u, v, 0.28, 0.45, 0.72, 0.8, 0.05)
    ring = (u - 0.5) ** 2 + (v - 0.45) ** 2
    shackle = v <= 0.46 and 0.1 ** 2 <= ring <= 0.16 ** 2
    if (body and not keyhole) or shackle:
        return WHITE
    return BLUE


def png(size: int) -> bytes:
    rows = b"".join(b"\x00" + bytes(c for x in range(size) for c in pixel((x + 0.5) / size, (y + 0.5) / size))
                    for y in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


if __name__ == "__main__":
    for size in (192, 512):
        (Path(__file__).with_name(f"icon-{size}.png")).write_bytes(png(size))
