#!/usr/bin/env python3
"""Cross-checks export Parquet files with an independent reader (pyarrow).

For each file given, reads it completely and prints one JSON line on stdout:
{"path": ..., "rows": N, "row_groups": N, "compression": [...], "schema": "<pyarrow schema>"}.
Reading every row (not just the footer) is the point: it proves pyarrow can decode all pages.
Exits non-zero, with the reason on stderr, if pyarrow is missing or a file cannot be read.

Usage: python3 scripts/check_parquet.py FILE.parquet [FILE.parquet ...]
"""

import json
import sys


def describe(path):
    import pyarrow.parquet as pq

    parquet_file = pq.ParquetFile(path)
    table = parquet_file.read()
    metadata = parquet_file.metadata
    codecs = sorted(
        {
            metadata.row_group(group).column(column).compression
            for group in range(metadata.num_row_groups)
            for column in range(metadata.num_columns)
        }
    )
    if table.num_rows != metadata.num_rows:
        raise ValueError(f"footer says {metadata.num_rows} rows, pages hold {table.num_rows}")
    return {
        "path": path,
        "rows": table.num_rows,
        "row_groups": metadata.num_row_groups,
        "compression": codecs,
        "schema": str(table.schema.remove_metadata()),
    }


def main(paths):
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        import pyarrow
    except ImportError:
        print("pyarrow is not installed (pip install pyarrow)", file=sys.stderr)
        return 3
    for path in paths:
        try:
            summary = describe(path)
        except Exception as error:  # any pyarrow failure means the file is not readable
            print(f"{path}: {error}", file=sys.stderr)
            return 1
        summary["pyarrow"] = pyarrow.__version__
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
