"""The benchmark's picture: p50 and p99 against offered rate, open loop, for e2e and
direct, one pair of lines per benchmark run (overlay several: one per broker), with the
100 ms p99 target and the 3.5 s deadline drawn. A PNG drawn with the standard library
alone (zlib): a small raster, a 5x7 bitmap font, straight lines.

    python -m tests.bench.plot OUT.png RESULTS.json [RESULTS.json ...]

RESULTS.json are the files `python -m tests.bench.run` writes beside its PNG. Solid
lines are p99, dashed p50; a hollow marker is a step that failed (p99 over the target,
a wrong answer, or an arrival not sent); a p99 past the top of the scale (a step aborted
with requests unanswered) is drawn at the top.
"""

import argparse
import itertools
import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any

WIDTH, HEIGHT = 960, 600
LEFT, RIGHT, TOP, BOTTOM = 80, 24, 48, 64
Y_MIN_MS, Y_MAX_MS = 1.0, 10_000.0
TARGET_MS, DEADLINE_MS = 100.0, 3_500.0
DESIGNS = ("e2e", "direct")
WHITE, BLACK, GRID = (255, 255, 255), (0, 0, 0), (225, 225, 225)
TARGET_COLOR, DEADLINE_COLOR = (120, 120, 120), (200, 30, 30)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75)]
Color = tuple[int, int, int]

# 5x7 glyphs: seven rows of five bits (hex, two digits a row), upper case only.
GLYPHS = {
    "0": "0e11131519110e",
    "1": "040c040404040e",
    "2": "0e11010204081f",
    "3": "1f02040201110e",
    "4": "02060a121f0202",
    "5": "1f101e0101110e",
    "6": "0608101e11110e",
    "7": "1f010204080808",
    "8": "0e11110e11110e",
    "9": "0e11110f01020c",
    "A": "0e11111f111111",
    "B": "1e11111e11111e",
    "C": "0e11101010110e",
    "D": "1c12111111121c",
    "E": "1f10101e10101f",
    "F": "1f10101e101010",
    "G": "0e11101711110f",
    "H": "1111111f111111",
    "I": "0e04040404040e",
    "J": "0702020202120c",
    "K": "11121418141211",
    "L": "1010101010101f",
    "M": "111b1515111111",
    "N": "11111915131111",
    "O": "0e11111111110e",
    "P": "1e11111e101010",
    "Q": "0e11111115120d",
    "R": "1e11111e141211",
    "S": "0f10100e01011e",
    "T": "1f040404040404",
    "U": "1111111111110e",
    "V": "11111111110a04",
    "W": "1111111515150a",
    "X": "11110a040a1111",
    "Y": "11110a04040404",
    "Z": "1f01020408101f",
    ".": "00000000000c0c",
    ",": "000000000c0408",
    "-": "0000001f000000",
    "=": "00001f001f0000",
    "/": "00010204081000",
    ":": "000c0c000c0c00",
    "(": "02040808080402",
    ")": "08040202020408",
    "%": "18190204081303",
    "_": "0000000000001f",
    "<": "02040810080402",
    ">": "08040201020408",
    "+": "0004041f040400",
}


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(WHITE) * width * height)

    def dot(self, x: int, y: int, color: Color, size: int = 1) -> None:
        half = size // 2
        for yy in range(y - half, y - half + size):
            if 0 <= yy < self.height:
                for xx in range(x - half, x - half + size):
                    if 0 <= xx < self.width:
                        at = 3 * (yy * self.width + xx)
                        self.pixels[at : at + 3] = bytes(color)

    def line(
        self,
        a: tuple[float, float],
        b: tuple[float, float],
        color: Color,
        size: int = 1,
        dash: int = 0,
    ) -> None:
        (x0, y0), (x1, y1) = (round(a[0]), round(a[1])), (round(b[0]), round(b[1]))
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for i in range(steps + 1):
            if dash and (i // dash) % 2:
                continue
            self.dot(x0 + (x1 - x0) * i // steps, y0 + (y1 - y0) * i // steps, color, size)

    def box(self, x: int, y: int, size: int, color: Color, filled: bool) -> None:
        half = size // 2
        for i in range(size):
            for j in range(size):
                edge = i in (0, size - 1) or j in (0, size - 1)
                if filled or edge:
                    self.dot(x - half + i, y - half + j, color)

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 2) -> int:
        """Draws `text` with its top-left at (x, y); returns its width in pixels."""
        for index, char in enumerate(text.upper()):
            rows = GLYPHS.get(char)
            if rows is None:
                continue
            left = x + index * 6 * scale
            for row in range(7):
                bits = int(rows[2 * row : 2 * row + 2], 16)
                for col in range(5):
                    if bits & (0x10 >> col):
                        self.dot(
                            left + col * scale + scale // 2,
                            y + row * scale + scale // 2,
                            color,
                            scale,
                        )
        return len(text) * 6 * scale

    def png(self) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        stride = 3 * self.width
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height)
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def nice_step(span: float, ticks: int = 6) -> float:
    raw = span / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def series(document: dict[str, Any], design: str) -> list[dict[str, Any]]:
    steps = document.get("open_loop", {}).get(design, [])
    return sorted(steps, key=lambda step: float(step["rate"]))


def plot(results: list[Path], out: Path) -> None:
    documents = [json.loads(path.read_text()) for path in results]
    canvas = Canvas(WIDTH, HEIGHT)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP  # y0 is the bottom
    rates = [float(s["rate"]) for d in documents for k in DESIGNS for s in series(d, k)]
    x_max = max([10.0, *rates]) * 1.05
    step = nice_step(x_max)

    def px(rate: float) -> float:
        return x0 + (x1 - x0) * rate / x_max

    def py(ms: float) -> float:
        ms = min(max(ms, Y_MIN_MS), Y_MAX_MS) if not math.isnan(ms) else Y_MAX_MS
        share = math.log10(ms / Y_MIN_MS) / math.log10(Y_MAX_MS / Y_MIN_MS)
        return y0 - (y0 - y1) * share

    # Grid and axes.
    tick = 0.0
    while tick <= x_max:
        canvas.line((px(tick), y0), (px(tick), y1), GRID)
        label = f"{tick:g}"
        canvas.text(round(px(tick)) - len(label) * 6, y0 + 8, label)
        tick += step
    for decade in range(5):
        ms = 10.0**decade
        canvas.line((x0, py(ms)), (x1, py(ms)), GRID)
        label = f"{ms:g}"
        canvas.text(x0 - 8 - len(label) * 12, round(py(ms)) - 7, label)
    canvas.line((x0, y0), (x1, y0), BLACK, 2)
    canvas.line((x0, y0), (x0, y1), BLACK, 2)
    canvas.text(x0 + (x1 - x0) // 2 - 150, HEIGHT - 28, "OFFERED RATE (REQUESTS/S)")
    canvas.text(8, 14, "MS (LOG)")
    canvas.text(x0 + 120, 14, "P50 (DASHED) AND P99 (SOLID) VS OFFERED RATE, OPEN LOOP")
    # The target and the deadline.
    canvas.line((x0, py(TARGET_MS)), (x1, py(TARGET_MS)), TARGET_COLOR, 2, dash=8)
    canvas.text(x1 - 230, round(py(TARGET_MS)) - 18, "P99 TARGET 100 MS", TARGET_COLOR)
    canvas.line((x0, py(DEADLINE_MS)), (x1, py(DEADLINE_MS)), DEADLINE_COLOR, 2, dash=8)
    canvas.text(x1 - 200, round(py(DEADLINE_MS)) - 18, "DEADLINE 3.5 S", DEADLINE_COLOR)
    # One pair of lines per run and design; the legend at the top left, over them.
    legend: list[tuple[Color, str]] = []
    for d_index, document in enumerate(documents):
        for k_index, design in enumerate(DESIGNS):
            steps = series(document, design)
            if not steps:
                continue
            color = PALETTE[(2 * d_index + k_index) % len(PALETTE)]
            points = [(px(float(s["rate"])), s) for s in steps]
            for quantile, size, dash in (("p99_ms", 3, 0), ("p50_ms", 1, 6)):
                drawn = [(x, py(float(s[quantile]))) for x, s in points]
                for a, b in itertools.pairwise(drawn):
                    canvas.line(a, b, color, size, dash)
            for x, s in points:
                canvas.box(round(x), round(py(float(s["p99_ms"]))), 9, color, bool(s["passed"]))
            broker = str(document.get("broker", "?"))
            legend.append((color, f"{broker} {design} {document.get('started', '')}"))
    legend.append((TARGET_COLOR, "HOLLOW MARKER: STEP FAILED"))
    width = 60 + 12 * max(len(text) for _, text in legend)
    for row in range(len(legend) * 20 + 8):
        canvas.line((x0 + 4, y1 + 2 + row), (x0 + 4 + width, y1 + 2 + row), WHITE)
    for index, (color, text) in enumerate(legend):
        top = y1 + 8 + 20 * index
        if index < len(legend) - 1:
            canvas.line((x0 + 12, top + 7), (x0 + 40, top + 7), color, 3)
        canvas.text(x0 + 48, top, text, color if index == len(legend) - 1 else BLACK)
    out.write_bytes(canvas.png())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("results", type=Path, nargs="+", help="results JSON of bench runs")
    args = parser.parse_args()
    plot(args.results, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
