"""Write the evaluation's PDF (data/tarrow-observatory.pdf) from its text
(data/pdf-source/tarrow-observatory.txt): Helvetica pages built by hand, as
scripts/fixtures/gen-pdf-fixture.py does, but wrapped and spread over as many pages as the text needs.

    python3 scripts/bench/eval/gen_pdf.py
"""
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from pdfwrite import escape, pdf, stream  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
SRC = DATA / "pdf-source" / "tarrow-observatory.txt"
OUT = DATA / "tarrow-observatory.pdf"
WIDTH = 88  # characters a line: fits 468 pt of 11 pt Helvetica
PER_PAGE = 44  # lines a page at 14 pt leading


def lines_of(text):
    out = []
    for para in text.strip().split("\n\n"):
        out += textwrap.wrap(" ".join(para.split()), WIDTH) + [""]
    return out[:-1]


def pdf_bytes(lines):
    pages = [lines[i:i + PER_PAGE] for i in range(0, len(lines), PER_PAGE)]
    # Objects: 1 catalog, 2 page tree, 3 font, then a page and its content stream per page.
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, page in enumerate(pages):
        text = ["BT", "/F1 11 Tf", "72 720 Td", "14 TL"] + [f"({escape(line)}) Tj T*" if line else "T*" for line in page] + ["ET"]
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * i} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        objects.append(stream("\n".join(text).encode("latin-1")))
    return pdf(objects)


if __name__ == "__main__":
    OUT.write_bytes(pdf_bytes(lines_of(SRC.read_text(encoding="ascii"))))
    print(OUT, OUT.stat().st_size, "bytes")
