"""Write the small PDF the retriever tests ingest (services/retriever/tests/fixtures/docs/glacier.pdf):
one page of Helvetica text, built by hand (no PDF library), with a correct cross-reference table.

    python3 scripts/gen-pdf-fixture.py
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts", "fixtures"))
from pdfwrite import escape, pdf, stream  # noqa: E402
OUT = os.path.join(ROOT, "services", "retriever", "tests", "fixtures", "docs", "glacier.pdf")
LINES = [
    "Field report: the Helmar glacier",
    "The Helmar glacier retreated 840 meters between 1990 and 2020.",
    "Its meltwater feeds the Sorrel river, which freezes every January.",
    "The survey team measured the ice with ground-penetrating radar.",
]


def main():
    text = ["BT", "/F1 12 Tf", "72 720 Td", "16 TL"]
    for line in LINES:
        text.append(f"({escape(line)}) Tj T*")
    text.append("ET")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        stream("\n".join(text).encode("latin-1")),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = pdf(objects)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(out)
    print(OUT, len(out), "bytes")


if __name__ == "__main__":
    main()
