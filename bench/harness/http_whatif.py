"""What-if for the `http` table's bytes per row: rewrite the lake's compacted Parquet
under variants of the representation and report bytes per row each, with the columns
that cost most.

    python3 bench/harness/http_whatif.py /var/tmp/lake-bench/<stamp>/storage-http-0/lake/data/tables/http

Every variant is written the way compaction writes (lake/src/maintenance/compact/mod.rs `COPY_OPTIONS`
and `order_by`): DuckDB `COPY … ORDER BY host, date_trunc('hour', ts), vhost, path, ts`
with zstd level 15, Parquet 2 encodings, 10 % bloom filters and row groups of 1Mi rows,
unless the variant changes that. Variants:
- as is: the baseline of the rewrite, to compare like with like;
- attrs in Caddy's order: each row's attrs shuffled, as Caddy writes header maps (Go map
  order) and as the collector stored them before it sorted them by key;
- attrs without `remote_port` (RFC 6302 asks servers to log the source port: kept);
- attrs without the entries Caddy writes the same on every line of a site (`msg`,
  `logger`, empty `user_id`, `resp_headers.Server`, `resp_headers.Alt-Svc`);
- attrs without `request.headers.*` (User-Agent and Referer are columns already);
- no attrs at all (the floor of the typed columns);
- `duration_ms` as int64 µs; sorted by (host, ts) as flushed files are, or by
  (host, vhost, ts); Parquet 1 encodings; 1 % bloom filters (DuckDB's default); zstd 9;
  DuckDB's defaults (122,880-row groups, zstd 3, Parquet 1).
Used to choose the storage settings; not part of the measured run. Needs DuckDB's Python
package (the query phase installs it) and pyarrow.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

LAKE = ("FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 15, PARQUET_VERSION V2, "
        "BLOOM_FILTER_FALSE_POSITIVE_RATIO 0.1, ROW_GROUP_SIZE 1048576")
ORDER = "host, date_trunc('hour', ts), vhost, path, ts"


def entries(keep: str) -> str:
    return f"map_from_entries(list_filter(map_entries(attrs), lambda e: {keep})) AS attrs"


VARIANTS = [  # name, column replacements, ORDER BY, COPY options
    ("as is", {}, ORDER, LAKE),
    ("attrs in Caddy's order (shuffled per row)",
     {"attrs": "map_from_entries(list_transform(list_sort(list_transform(map_entries(attrs), "
               "lambda e: {'r': hash(e.key, ts), 'e': e})), lambda x: x.e)) AS attrs"}, ORDER, LAKE),
    ("attrs without remote_port", {"attrs": entries("e.key <> 'remote_port'")}, ORDER, LAKE),
    ("attrs without per-site constants",
     {"attrs": entries("NOT (e.key IN ('msg', 'logger', 'resp_headers.Server', 'resp_headers.Alt-Svc') "
                       "OR (e.key = 'user_id' AND e.value = ''))")}, ORDER, LAKE),
    ("attrs without request.headers.*", {"attrs": entries("NOT starts_with(e.key, 'request.headers.')")},
     ORDER, LAKE),
    ("no attrs", {"attrs": None}, ORDER, LAKE),
    ("duration as int64 µs", {"duration_ms": "CAST(round(duration_ms * 1000) AS BIGINT) AS duration_us"},
     ORDER, LAKE),
    ("sorted by host, ts", {}, "host, ts", LAKE),
    ("sorted by host, vhost, ts", {}, "host, vhost, ts", LAKE),
    ("Parquet 1 encodings", {}, ORDER, LAKE.replace("PARQUET_VERSION V2", "PARQUET_VERSION V1")),
    ("1 % bloom filters", {}, ORDER, LAKE.replace("RATIO 0.1", "RATIO 0.01")),
    ("zstd 9", {}, ORDER, LAKE.replace("LEVEL 15", "LEVEL 9")),
    ("DuckDB defaults (122,880 rows, zstd 3)", {}, ORDER, "FORMAT parquet, COMPRESSION zstd"),
]


def column_bytes(path: str) -> dict[str, int]:
    md = pq.ParquetFile(path).metadata
    sizes: dict[str, int] = {}
    for rg in range(md.num_row_groups):
        g = md.row_group(rg)
        for c in range(g.num_columns):
            col = g.column(c)
            sizes[col.path_in_schema] = sizes.get(col.path_in_schema, 0) + col.total_compressed_size
    return sizes


def main() -> None:
    files = sorted(Path(sys.argv[1]).rglob("*.parquet"))
    src = "[" + ", ".join(f"'{f}'" for f in files) + "]"
    con = duckdb.connect()
    con.execute("SET threads = 1; SET preserve_insertion_order = true; SET TimeZone = 'UTC'")
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({src})").fetchall()]
    n = con.execute(f"SELECT count(*) FROM read_parquet({src})").fetchone()[0]
    on_disk = sum(f.stat().st_size for f in files)
    print(f"{n:,} rows; {len(files)} file(s); as committed {on_disk / n:.1f} B/row")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "v.parquet")
        for name, repl, order, opts in VARIANTS:
            sel = ", ".join(repl.get(c, f'"{c}"') for c in cols if repl.get(c, "") is not None)
            con.execute(f"COPY (SELECT {sel} FROM read_parquet({src}) ORDER BY {order}) TO '{out}' ({opts})")
            top = sorted(column_bytes(out).items(), key=lambda kv: -kv[1])[:5]
            print(f"  {name:<42} {os.path.getsize(out) / n:6.1f} B/row   "
                  + "  ".join(f"{k.replace('attrs.key_value.', 'attrs.')} {v / n:.1f}" for k, v in top), flush=True)


if __name__ == "__main__":
    main()
