"""Is a checkpoint file the bytes that were written? torch.save writes a zip archive with a CRC-32 of
every record, but torch.load never checks them: a flipped byte in a weight (a bad sector, a broken
copy, a Drive sync gone wrong) loads without a word and resumes a run with a weight off by thousands.
`zip_problem` reads the file once and checks every CRC (about 1 GB/s on a laptop; reading a file
from Drive costs more than that)."""

from __future__ import annotations

import zipfile
from pathlib import Path


def zip_problem(path: str | Path) -> str | None:
    """What is wrong with the zip archive at `path` (a record whose CRC does not match, a broken
    directory), or None when every record reads back as written.

    A file written with CRCs turned off (`torch.serialization.config.save.compute_crc32 = False`)
    holds zeros there and cannot be checked; it passes.
    """
    try:
        with zipfile.ZipFile(path) as z:
            records = [i for i in z.infolist() if i.file_size]
            if records and all(i.CRC == 0 for i in records):
                return None
            bad = z.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        return f"its zip structure is broken ({type(e).__name__}: {e})"
    if bad is not None:
        return f"record {bad!r} does not match its CRC-32 (bytes changed after the write)"
    return None
