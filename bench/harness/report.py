"""The results as one Markdown table (each figure beside its peer, ratio and target) and JSON."""

from __future__ import annotations

MB = 1_000_000


def _f(v, fmt="{:,.1f}", none="—"):
    return none if v is None else fmt.format(v)


def _parts(p: dict) -> str:
    if p.get("rss_anon_median_kib") is None:
        return ""
    return f" = {p['rss_anon_median_kib'] * 1024 / MB:.1f} anon + {p['rss_file_median_kib'] * 1024 / MB:.1f} file-backed"


def _verdict(ok):
    return "—" if ok is None else ("pass" if ok else "**MISS**")


def rows(res: dict) -> list[tuple]:
    """(area, measure, lake, peer, ratio, target, verdict, runs)."""
    out = []
    fp = res.get("footprint")
    if fp and "median" in fp:
        m = fp["median"]
        ne, h, a = m["node_exporter"], m["collector_host"], m["collector_all"]
        # Runs of the footprint phase before collectd was a peer have no collectd figures.
        ch, ca = m.get("collectd_host"), m.get("collectd_all")
        win = f"{fp['runs']} × {fp['window_s']:.0f} s window"

        def mb(p):
            return f"{p['rss_median_kib'] * 1024 / MB:.1f} MB"

        r = h["rss_median_kib"] / ne["rss_median_kib"]
        out.append(("1 footprint", f"RSS, host metrics only (every {fp['interval_s']:g} s)",
                    f"{mb(h)}{_parts(h)}", f"node_exporter {mb(ne)}{_parts(ne)}",
                    f"{r:.2f}×", "< node_exporter", _verdict(r < 1), win))
        if ch:
            out.append(("1 footprint", "RSS, host metrics only, vs collectd (same plugins → csv)",
                        f"{mb(h)}{_parts(h)}", f"collectd {mb(ch)}{_parts(ch)}",
                        f"{h['rss_median_kib'] / ch['rss_median_kib']:.2f}×", "≤ 8 MB",
                        _verdict(h["rss_median_kib"] * 1024 <= 8 * MB), win))
        r = h["cpu_seconds_per_hour"] / ne["cpu_seconds_per_hour"] if ne["cpu_seconds_per_hour"] else None
        out.append(("1 footprint", "CPU, host metrics only", f"{h['cpu_seconds_per_hour']:.1f} s/h",
                    f"node_exporter {ne['cpu_seconds_per_hour']:.1f} s/h (scraped every {fp['interval_s']:g} s)",
                    _f(r, "{:.2f}×"), "< node_exporter", _verdict(r < 1 if r is not None else None), win))
        if ch:
            r = h["cpu_seconds_per_hour"] / ch["cpu_seconds_per_hour"] if ch["cpu_seconds_per_hour"] else None
            out.append(("1 footprint", "CPU, host metrics only, vs collectd", f"{h['cpu_seconds_per_hour']:.1f} s/h",
                        f"collectd {ch['cpu_seconds_per_hour']:.1f} s/h", _f(r, "{:.2f}×"), "≤ collectd",
                        _verdict(h["cpu_seconds_per_hour"] <= ch["cpu_seconds_per_hour"]), win))
        peer = f"collectd + tail {mb(ca)}{_parts(ca)}; node_exporter {mb(ne)}" if ca else f"node_exporter {mb(ne)}"
        out.append(("1 footprint", "RSS, every source on",
                    f"{mb(a)}{_parts(a)} (+journalctl: {a['rss_with_children_median_kib'] * 1024 / MB:.1f})", peer,
                    f"{a['rss_median_kib'] / (ca or ne)['rss_median_kib']:.2f}×", "≤ 12 MB",
                    _verdict(a["rss_median_kib"] * 1024 <= 12 * MB), win))
        exp = "" if fp.get("batch_wait", "default (500ms)").startswith("default") else f", batch_wait {fp['batch_wait']}"
        exp += "" if fp.get("inventory", True) else ", no inventory"
        peer = (f"collectd + tail {ca['cpu_percent_of_core']:.2f} % ({ca['cpu_seconds_per_hour']:.1f} s/h); "
                f"node_exporter {ne['cpu_percent_of_core']:.2f} %") if ca else f"node_exporter {ne['cpu_percent_of_core']:.2f} %"
        base = (ca or ne)["cpu_seconds_per_hour"]
        out.append(("1 footprint", f"CPU, every source on (Caddy {fp['caddy_rate']:g} lines/s, journal {fp['journal_rate']:g}/s{exp})",
                    f"{a['cpu_percent_of_core']:.2f} % of a core ({a['cpu_seconds_per_hour']:.0f} s/h; collector alone "
                    f"{_f(a.get('cpu_self_seconds_per_hour'), '{:.0f}')} s/h, the rest journalctl)",
                    peer, _f(a["cpu_seconds_per_hour"] / base if base else None, "{:.2f}×"),
                    "< 1 % of a core", _verdict(a["cpu_percent_of_core"] < 1), win))
    cb = res.get("caddy")
    if cb and "parse" in cb:
        p = cb["parse"]
        out.append(("2 caddy parse", "tail + parse + batch, one core", f"{p['median_lines_per_s']:,.0f} lines/s",
                    "—", "—", "≥ 300,000 lines/s", _verdict(p["median_lines_per_s"] >= 300_000), f"{p['runs']} runs"))
        if "parse_encode" in cb:
            e = cb["parse_encode"]
            out.append(("2 caddy parse", "… + wire encode (Arrow IPC + zstd), as the source spools",
                        f"{e['median_lines_per_s']:,.0f} lines/s", "—", "—", "(info)", "—", f"{e['runs']} runs"))
    ing = res.get("ingest")
    if ing and "median" in ing:
        m = ing["median"]
        runs = f"{ing['runs']} runs"
        out.append(("3 ingest", f"rows/s, {ing['collectors']} collectors, {ing['seconds']} s", f"{m['rows_per_sec']:,.0f} rows/s",
                    "—", "—", "≥ 1,000,000 rows/s (goal 2 M)", _verdict(m["rows_per_sec"] >= 1_000_000), runs))
        out.append(("3 ingest", "ack latency p99 (p50)", f"{m['ack_p99_ms']:.0f} ms ({m['ack_p50_ms']:.0f} ms)", "—", "—",
                    "< 50 ms", _verdict(m["ack_p99_ms"] < 50), runs))
        out.append(("3 ingest", "freshness p99 (p50): ack → row seen by `/v1/sql`, under that load",
                    f"{m['fresh_p99_ms']:.0f} ms ({m['fresh_p50_ms']:.0f} ms)", "—", "—", "≤ 1 s",
                    _verdict(m["fresh_p99_ms"] <= 1000), runs))
        if m.get("rss_hwm_kib") is not None:
            out.append(("3 ingest", "`lake serve` peak RSS under that load (VmHWM)", f"{m['rss_hwm_kib'] * 1024 / MB:.0f} MB",
                        "—", "—", "≤ 400 MB", _verdict(m["rss_hwm_kib"] * 1024 <= 400 * MB), runs))
            out.append(("3 ingest", "`lake serve` median RSS under that load (sampled every 200 ms)",
                        f"{m['rss_median_kib'] * 1024 / MB:.0f} MB = {m['rss_anon_median_kib'] * 1024 / MB:.0f} anon + "
                        f"{m['rss_file_median_kib'] * 1024 / MB:.0f} file-backed", "—", "—", "≤ 400 MB",
                        _verdict(m["rss_median_kib"] * 1024 <= 400 * MB), runs))
    st = res.get("storage_http")
    if st and "median" in st:
        m = st["median"]
        out.append(("4 storage", f"http bytes/row ({st['lines']:,} Caddy lines via collector → lake, compacted)",
                    f"{m['bytes_per_row']:.1f} B", f"raw JSON {m['raw_bytes_per_row']:.0f} B; gzip -6 {m['gzip_bytes_per_row']:.1f} B",
                    f"{m['bytes_per_row'] / m['gzip_bytes_per_row']:.2f}× gzip ({m['raw_bytes_per_row'] / m['bytes_per_row']:.0f}:1 vs raw)",
                    "≤ 25 B/row", _verdict(m["bytes_per_row"] <= 25), f"{st['runs']} runs"))
    sm = res.get("storage_metrics")
    if sm and "median" in sm:
        m = sm["median"]
        p = m["prometheus_bytes_per_sample_snapshot"]
        desc = f"{sm['window_s']:.0f} s at {sm['interval_s']:g} s"
        out.append(("4 storage", f"metrics bytes/sample, same node_exporter series ({desc})",
                    f"{m['lake_scrape_bytes_per_sample']:.2f} B (as flushed {m['lake_scrape_bytes_per_sample_flushed']:.2f})",
                    f"Prometheus {p:.2f} B (block snapshot); {m['prometheus_bytes_per_sample_data_dir']:.2f} B (data dir, WAL)",
                    f"{m['lake_scrape_bytes_per_sample'] / p:.2f}×", "≤ 2× Prometheus",
                    _verdict(m["lake_scrape_bytes_per_sample"] <= 2 * p), f"{sm['runs']} runs"))
        vm = m.get("victoria_metrics_bytes_per_sample")
        if vm:
            out.append(("4 storage", f"metrics bytes/sample, same node_exporter series vs VictoriaMetrics ({desc})",
                        f"{m['lake_scrape_bytes_per_sample']:.2f} B",
                        f"VictoriaMetrics {vm:.2f} B (its own scrape, force-merged: data + indexdb)",
                        f"{m['lake_scrape_bytes_per_sample'] / vm:.2f}×", "≤ VictoriaMetrics",
                        _verdict(m["lake_scrape_bytes_per_sample"] <= vm), f"{sm['runs']} runs"))
        out.append(("4 storage", f"metrics bytes/sample, collector host source ({desc})",
                    f"{m['lake_host_bytes_per_sample']:.2f} B", f"Prometheus {p:.2f} B (node_exporter, same window)",
                    f"{m['lake_host_bytes_per_sample'] / p:.2f}×", "≤ 2× Prometheus",
                    _verdict(m["lake_host_bytes_per_sample"] <= 2 * p), f"{sm['runs']} runs"))
    sg = res.get("storage_generated")
    if sg and "bytes_per_sample" in sg:
        b = sg["bytes_per_sample"]
        r = b["lake"] / b["victoria_metrics"]
        out.append(("4 storage", f"metrics bytes/sample, generated lake, {sg['days']} finished days ({sg['samples']:,} samples)",
                    f"{b['lake']:.2f} B compacted (as generated {b['lake_generated']:.2f})",
                    f"VictoriaMetrics {b['victoria_metrics']:.2f} B (data {b['victoria_metrics_data']:.2f} + indexdb "
                    f"{b['victoria_metrics_indexdb']:.2f}, force-merged); Prometheus {b['prometheus']:.2f} B (promtool blocks)",
                    f"{r:.2f}× VM ({b['lake'] / b['prometheus']:.2f}× Prometheus)", "≤ VictoriaMetrics", _verdict(r <= 1),
                    "1 (deterministic)"))
    q = res.get("query")
    if q:
        qp = q.get("lake_vs_prometheus", {})
        s30 = qp.get("storage_30d")
        if s30:
            r = s30["lake_bytes_per_sample"] / s30["prometheus_bytes_per_sample"]
            out.append(("4 storage", f"metrics bytes/sample, generated lake, last {s30.get('days', 30)} days ({s30['samples']:,} samples)",
                        f"{s30['lake_bytes_per_sample']:.2f} B", f"Prometheus {s30['prometheus_bytes_per_sample']:.2f} B (promtool blocks, 24 h)",
                        f"{r:.2f}×", "≤ 2× Prometheus", _verdict(r <= 2), "1 (deterministic)"))
        lb = q.get("lake_vs_duckdb", {})
        # Issue 23 §3: within 10 % of plain DuckDB or 1 ms, whichever is larger.
        pct, ms = lb.get("target_overhead_pct", 10.0), lb.get("target_overhead_ms", 1.0)
        for item in lb.get("queries", []):
            over = item["overhead_pct"]
            lake, duck = item["lake_p50_ms"], item["duckdb_p50_ms"]
            out.append(("5 query", f"{item['query']} (`{item['api']}`)", f"{lake:.1f} ms",
                        f"DuckDB {duck:.1f} ms", f"{over:+.1f} % ({lake - duck:+.2f} ms)",
                        f"overhead ≤ {pct:g} % or {ms:g} ms", _verdict(lake - duck <= max(duck * pct / 100, ms)),
                        f"{lb.get('runs')} runs"))
        for item in qp.get("queries", []):
            r = item["ratio_lake_over_prometheus"]
            out.append(("5 query", f"{item['query']} vs PromQL `{item['promql']}`", _f(item["lake_p50_ms"], "{:.1f} ms"),
                        f"Prometheus {item['prometheus_p50_ms']:.1f} ms", _f(r, "{:.2f}×"), "(info: no target)", "—",
                        f"{qp.get('runs')} runs"))
    sc = res.get("scale")
    if sc and "bench" in sc:
        size, gen, b = sc["size"], sc["lake"], sc["bench"]
        desc = f"{size['days']} days × {size['hosts']} nodes"
        out.append(("6 scale", f"generated lake: {desc} (`lake-gen`, once)",
                    f"{b['http_rows']:,} http rows, {b['metric_rows']:,} samples, {gen['bytes'] / 1e9:.1f} GB",
                    "—", "—", "(info)", "—", f"generated in {gen['seconds'] / 60:.0f} min"))
        for item in b["queries"]:
            out.append(("6 scale", f"{item['query']} (`{item['api']}`, last {b['range']})", f"{item['lake_p50_ms']:.1f} ms",
                        "—", "—", "p50 ≤ 300 ms", _verdict(item["lake_p50_ms"] <= 300), f"{b['runs']} runs"))
        r = sc["lake_serve"]
        gib = 1 << 20
        out.append(("6 scale", "`lake serve` peak RSS (VmHWM) over the queries (median VmRSS)",
                    f"{r['hwm_kib'] / 1024:,.0f} MiB ({r['rss_median_kib'] / 1024:,.0f} MiB)", "—", "—", "≤ 1 GiB",
                    _verdict(r["hwm_kib"] <= gib), f"{r['samples']} samples"))
    ar = (sc or {}).get("archive")
    if ar:
        rows_day = ar.get("rows") or {}
        out.append(("6 scale", f"nightly archive of one day ({ar['date']}: {rows_day.get('http', 0):,} http rows, "
                               f"{sum(rows_day.values()):,} rows) to S3 (moto), read-back verified",
                    f"{ar['seconds']:.1f} s, {ar['bytes_uploaded'] / 1e6:,.0f} MB in {ar['files_uploaded']} files "
                    f"({ar['bytes_uploaded'] / 1e6 / ar['seconds']:.0f} MB/s; peak RSS {ar['peak_rss_kib'] / 1024:.0f} MiB)",
                    "—", "—", "(info)", "—", "1 run"))
    return out


def whatif_tables(res: dict) -> list[tuple[str, dict]]:
    """(title, lake-metrics-whatif JSON) of every what-if the run measured."""
    out = []
    sg = res.get("storage_generated") or {}
    if sg.get("whatif"):
        out.append((f"generated lake, {sg['day_dirs'][0].removeprefix('date=')}", sg["whatif"]))
    for r in (res.get("storage_metrics") or {}).get("per_run", [])[:1]:
        if r.get("lake_scrape", {}).get("whatif"):
            out.append(("node_exporter scraped by the collector", r["lake_scrape"]["whatif"]))
    return out


def whatif_markdown(res: dict) -> list[str]:
    """The "what-if: metrics encoding levers" section: bytes per sample of each variant."""
    tables = whatif_tables(res)
    if not tables:
        return []
    lines = ["", "## What-if: metrics encoding levers", "",
             "Each variant rewrites the same samples through the lake's writer (`lake-metrics-whatif`, "
             "DuckDB sorts, the parquet crate encodes); \"alone\" changes one lever of the writer as it was, "
             "\"together\" adds them in turn up to the lake's defaults. Bytes per sample (`ts` / `value` columns).", "",
             "| variant | " + " | ".join(f"{t} ({w['samples']:,} samples)" for t, w in tables) + " |",
             "|---|" + "---:|" * len(tables)]
    names = [v["variant"] for v in tables[0][1]["variants"]]
    for name in names:
        cells = []
        for _, w in tables:
            v = next((x for x in w["variants"] if x["variant"] == name), None)
            if v is None:
                cells.append("—")
                continue
            c = v["column_bytes_per_sample"]
            cells.append(f"{v['bytes_per_sample']:.3f} ({c.get('ts', 0):.3f} / {c.get('value', 0):.3f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(res: dict) -> str:
    meta = res["meta"]
    lines = [
        f"# lake benchmarks vs peers — {meta['started']}",
        "",
        f"Command: `{meta['command']}` (mode: {meta['mode']}). Commit {meta['git_rev']}{' + uncommitted changes' if meta['git_dirty'] else ''}. "
        f"{meta['cores']} cores; load average before {meta['load_before']}, after {meta['load_after']}.",
        f"Peers: {', '.join(f'{k} {v}' for k, v in meta['peers'].items())}. Medians of the runs shown. "
        "Ratio = lake ÷ peer (for footprint, storage and query, lower is better).",
        "",
        "| area | measure | lake | peer | ratio | target | verdict | runs |",
        "|---|---|---:|---|---:|---|:---:|---|",
    ]
    for r in rows(res):
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    lines += whatif_markdown(res)
    if res.get("errors"):
        lines += ["", "## Phases that failed", ""]
        lines += [f"- **{k}**: {v}" for k, v in res["errors"].items()]
    lines += ["", "Load average per phase (1, 5, 15 min) at its start → end:", ""]
    lines += [f"- {k}: {v['before']} → {v['after']} ({v['seconds']:.0f} s)" for k, v in res.get("phase_load", {}).items()]
    lines += ["", "Full per-run figures: `latest.json` beside this file. How each figure is measured: `bench/README.md`.", ""]
    return "\n".join(lines)
