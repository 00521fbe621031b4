"""The seeding run: one transaction that empties, unindexes, loads, reindexes and checks the CRM.

Everything between the emptiness check and the restored, verified indexes happens in a
single transaction on the owner connection, so a failure at any point (or a killed
process) rolls back both the rows and the dropped indexes, constraints and disabled
triggers. ANALYZE runs after the commit.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

import msgspec
from tqdm import tqdm

from herald.cli.seed import generate, schema
from herald.cli.seed.generate import TABLES, ChunkData, plan_chunks
from herald.cli.seed.load import load_chunks, read_reference
from herald.cli.seed.schema import Definition, SeedError
from herald.db import admin_connection
from herald.settings import Settings

# Index builds sort tens of millions of keys; the default 64 MB spills to disk many
# times over. 2 GB is a twelfth of this machine's memory and is only held while building.
MAINTENANCE_WORK_MEM = "2GB"


class SeedReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a seeding run loaded and how long each phase took."""

    clients: int
    seed: int
    processes: int
    rows: dict[str, int]
    prepare_seconds: float  # locks, checks, reset, dropping indexes
    generate_copy_seconds: float
    index_rebuild_seconds: float  # indexes, keys, foreign-key validation, triggers
    analyze_seconds: float
    total_seconds: float
    rebuild_seconds: dict[str, float] = {}  # per index or constraint
    truncated: list[str] = []  # tables a reset emptied


class _Progress:
    """Phase lines and the progress bar on stderr, or nothing when progress is off."""

    def __init__(self, enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.enabled = enabled
        self.stream = stream

    def line(self, text: str) -> None:
        if self.enabled:
            tqdm.write(f"seed: {text}", file=self.stream)

    def bar(self, total: int) -> tqdm:
        return tqdm(
            total=total,
            unit=" clients",
            unit_scale=True,
            desc="seed: generate+copy",
            disable=not self.enabled,
            file=self.stream,
            smoothing=0.1,
            mininterval=1.0,
        )


async def seed_crm(
    settings: Settings,
    *,
    clients: int,
    seed: int = 1,
    processes: int | None = None,
    reset: bool = False,
    progress: bool = True,
) -> SeedReport:
    """Fill the CRM tables with ``clients`` synthetic Ukrainian gas customers.

    The same ``clients`` and ``seed`` always give the same rows, whatever ``processes``.
    Refuses (SeedError) when the CRM tables already hold data unless ``reset`` is set,
    which empties them (and tables whose foreign keys point at them) first.
    """
    if clients < 1:
        raise ValueError("clients must be at least 1")
    processes = processes or os.cpu_count() or 1
    if processes < 1:
        raise ValueError("processes must be at least 1")
    out = _Progress(progress)
    started = time.perf_counter()
    async with admin_connection(settings) as conn:
        # Fail fast rather than queue behind a running application (or behind a seeder
        # started twice); the locks taken below make later statements wait for nothing.
        await conn.execute("SET lock_timeout = '10s'")
        reference = await read_reference(conn)
        tasks = plan_chunks(clients, seed, reference, generate.CHUNK_CLIENTS)
        out.line(
            f"{clients:,} clients, seed {seed}, {processes} generator processes, "
            f"{len(tasks)} chunks of up to {generate.CHUNK_CLIENTS:,} clients"
        )
        async with conn.transaction():
            # An index build may take many minutes.
            await conn.execute(f"""
                SET LOCAL statement_timeout = 0;
                SET LOCAL maintenance_work_mem = '{MAINTENANCE_WORK_MEM}';
                SET LOCAL max_parallel_maintenance_workers = {max(0, processes - 1)};
            """)
            await schema.lock(conn, TABLES)
            truncated: list[str] = []
            if reset:
                truncated = await schema.truncate_cascade(conn, TABLES)
                out.line(f"reset: emptied {', '.join(truncated)}")
            else:
                full = await schema.nonempty(conn, TABLES)
                if full:
                    raise SeedError(
                        f"CRM tables already hold data ({', '.join(full)}); "
                        "seed with reset to replace it"
                    )
            saved = await schema.capture(conn, TABLES)
            await schema.drop(conn, saved)
            # Truncating in this transaction is what allows COPY FREEZE.
            await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
            counts = {
                kind: sum(1 for d in saved if d.kind == kind)
                for kind in ("constraint", "index", "foreign_key", "trigger")
            }
            out.line(
                f"dropped {counts['index']} indexes, {counts['constraint']} key constraints, "
                f"{counts['foreign_key']} foreign keys, disabled {counts['trigger']} triggers "
                "(restored before commit; rolled back with the data on failure)"
            )
            prepared = time.perf_counter()

            with out.bar(clients) as bar:

                def advance(chunk: ChunkData) -> None:
                    bar.update(chunk.clients)

                rows = await load_chunks(conn, tasks, processes, advance)
            loaded = time.perf_counter()
            out.line(
                f"generated and copied {sum(rows.values()):,} rows in {loaded - prepared:,.0f} s: "
                + ", ".join(f"{t} {rows[t]:,}" for t in TABLES)
            )

            out.line(
                f"rebuilding {len(saved)} definitions (GIN trigram indexes take minutes "
                "at millions of rows; foreign keys are validated)"
            )

            def start(d: Definition) -> None:
                what = {
                    "constraint": "key",
                    "index": f"{d.method} index",
                    "foreign_key": "foreign key",
                    "trigger": "trigger",
                }[d.kind]
                out.line(f"  building {what} {d.name} on {d.table} ...")

            def done(d: Definition, seconds: float) -> None:
                out.line(f"  ... {d.name} done in {seconds:,.1f} s")

            rebuilt = await schema.restore(conn, saved, on_start=start, on_done=done)
            await schema.verify(conn, TABLES, saved)
            await schema.reset_identities(conn, TABLES)
            indexed = time.perf_counter()
            out.line(f"rebuilt {len(saved)} definitions in {indexed - loaded:,.0f} s; committing")
        out.line("analyzing")
        await conn.execute(f"ANALYZE {', '.join(TABLES)}")
        analyzed = time.perf_counter()
    report = SeedReport(
        clients=clients,
        seed=seed,
        processes=processes,
        rows={t: rows.get(t, 0) for t in TABLES},
        prepare_seconds=round(prepared - started, 3),
        generate_copy_seconds=round(loaded - prepared, 3),
        index_rebuild_seconds=round(indexed - loaded, 3),
        analyze_seconds=round(analyzed - indexed, 3),
        total_seconds=round(analyzed - started, 3),
        rebuild_seconds={name: round(s, 3) for name, s in rebuilt.items()},
        truncated=truncated,
    )
    out.line(f"done in {report.total_seconds:,.0f} s")
    return report
