"""What-if for the `http` table's bytes per row: rewrite the lake's compacted Parquet
with pyarrow under variants of the schema/encoding and report bytes per row each.

    python3 bench/harness/http_whatif.py /var/tmp/lake-bench/<stamp>/storage-http-0/lake/data/tables/http

Variants (each on top of the lake's own settings: zstd(3), sorted by host, ts):
- as is (pyarrow, zstd 3): the baseline of the rewrite, to compare like with like;
- attrs without `remote_port`;
- attrs without request headers other than those already columns (`request.headers.*`);
- attrs without headers, `remote_port`, resp_headers;
- `duration_ms` rounded to µs stored as int64 µs;
- all of the above;
- zstd level 9 instead of 3 (as is).
Used for the report's proposed fixes; not part of the measured run.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def filter_map(col: pa.ChunkedArray, drop_mask) -> pa.Array:
    """The map column without the entries whose key matches `drop_mask(keys) -> bool array`."""
    arr = col.combine_chunks()
    keep = pc.invert(drop_mask(arr.keys))
    parents = pc.filter(pc.list_parent_indices(pa.ListArray.from_arrays(arr.offsets, arr.keys)), keep)
    counts = [0] * len(arr)
    grouped = pa.table({"p": parents}).group_by("p").aggregate([("p", "count")])
    for p, c in zip(grouped.column("p").to_pylist(), grouped.column("p_count").to_pylist()):
        counts[p] = c
    offsets = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(pa.array(counts, pa.int64()))])
    offsets = pc.cast(offsets, pa.int32())
    return pa.MapArray.from_arrays(offsets, pc.filter(arr.keys, keep), pc.filter(arr.items, keep), mask=arr.is_null())


def size(table: pa.Table, level: int = 3, **kw) -> int:
    with tempfile.NamedTemporaryFile(suffix=".parquet") as f:
        pq.write_table(table, f.name, compression="zstd", compression_level=level, **kw)
        return Path(f.name).stat().st_size


def main() -> None:
    files = sorted(Path(sys.argv[1]).rglob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files])
    n = t.num_rows
    on_disk = sum(f.stat().st_size for f in files)
    attrs_i = t.schema.get_field_index("attrs")
    dur_i = t.schema.get_field_index("duration_ms")

    def with_attrs(tab, drop):
        return tab.set_column(attrs_i, "attrs", filter_map(tab.column("attrs"), drop))

    def no_port(k):
        return pc.equal(k, "remote_port")

    def no_headers(k):
        return pc.starts_with(k, "request.headers.")

    def lean(k):
        return pc.or_(pc.or_(no_port(k), no_headers(k)), pc.starts_with(k, "resp_headers."))
    dur_us = pc.cast(pc.round(pc.multiply(t.column("duration_ms"), 1000.0)), pa.int64())
    variants = {
        "lake's file as committed": None,
        "rewrite as is (pyarrow, zstd 3)": t,
        "attrs without remote_port": with_attrs(t, no_port),
        "attrs without request.headers.*": with_attrs(t, no_headers),
        "attrs without headers, resp_headers, remote_port": with_attrs(t, lean),
        "duration as int64 µs": t.set_column(dur_i, "duration_us", dur_us),
        "all of the above": with_attrs(t, lean).set_column(dur_i, "duration_us", dur_us),
    }
    print(f"{n:,} rows; {len(files)} file(s)")
    for name, tab in variants.items():
        b = on_disk if tab is None else size(tab)
        print(f"  {name:<52} {b / n:6.1f} B/row")
    print(f"  {'rewrite as is, zstd 9':<52} {size(t, 9) / n:6.1f} B/row")


if __name__ == "__main__":
    main()
