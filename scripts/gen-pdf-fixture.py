"""Write the small PDF the retriever tests ingest (services/retriever/tests/fixtures/docs/glacier.pdf):
one page of Helvetica text, built by hand (no PDF library), with a correct cross-reference table.

    python3 scripts/gen-pdf-fixture.py
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "services", "retriever", "tests", "fixtures", "docs", "glacier.pdf")
LINES = [
    "Field report: the Helmar glacier",
    "The Helmar glacier retreated 840 meters between 1990 and 2020.",
    "Its meltwater feeds the Sorrel river, which freezes every January.",
    "The survey team measured the ice with ground-penetrating radar.",
]


def escape(s):
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def main():
    text = ["BT", "/F1 12 Tf", "72 720 Td", "16 TL"]
    for line in LINES:
        text.append(f"({escape(line)}) Tj T*")
    text.append("ET")
    stream = "\n".join(text).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n".encode()
    out += b"0000000000 65535 f \n"
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(out)
    print(OUT, len(out), "bytes")


if __name__ == "__main__":
    main()
