"""scripts/ab_timings.py: the figures issue 25 quotes, read from fresh-clone reproduce logs."""

from __future__ import annotations

from pathlib import Path

import pytest


def write_log(folder: Path, commit: str, grid_min: float, runs: int, seconds: int) -> Path:
    folder.mkdir()
    (folder / "reproduce.log").write_text(
        f"commit {commit} start 2026-12-06T19:04:01Z\nnox > Running session reproduce\n"
        f"grid embedded:  99%|#| 10/{runs} [00:10<00:00]\rprofile embedded: {runs} runs in 58 units, {runs} run now, "
        f"0 already done, 1 failed, {grid_min} min\nexecuted 15 notebooks in 81.0 s\n"
        f"rc=0 seconds={seconds} end 2026-12-06T19:20:00Z\n")
    return folder


def test_the_ratio_pools_every_run_and_shows_each_adjacent_pair(tmp_path, capsys, load_script):
    logs = [write_log(tmp_path / name, commit, grid, runs, 900)
            for name, commit, grid, runs in [("A1", "aaaaaaa", 12.0, 651), ("B1", "bbbbbbb", 20.0, 561),
                                             ("A2", "aaaaaaa", 15.0, 651), ("B2", "bbbbbbb", 18.0, 561)]]
    load_script("ab_timings").main([str(p) for p in logs])
    out = capsys.readouterr().out
    assert "grid  12.0 min  651 runs" in out and "reproduce 15 min 00 s" in out
    # (12 + 15) / 2 over (20 + 18) / 2; pairs A1/B1, A2/B1, A2/B2
    assert "grid aaaaaaa / bbbbbbb: 13.50 / 19.00 min = 0.711 (2 and 2 runs); adjacent pairs 0.600, 0.750, 0.833" in out
    load_script("ab_timings").main([str(p) for p in logs] + ["--new", "bbb"])
    assert "grid bbbbbbb / aaaaaaa: 19.00 / 13.50 min = 1.407" in capsys.readouterr().out


def test_an_unfinished_log_is_named_in_one_line(tmp_path, load_script):
    folder = tmp_path / "A1"
    folder.mkdir()
    (folder / "reproduce.log").write_text("commit aaaaaaa start 2026-12-06T19:04:01Z\n")
    with pytest.raises(SystemExit, match=r"A1/reproduce.log: not a finished fresh-clone reproduce log \(no grid_min, seconds\)"):
        load_script("ab_timings").main([str(folder)])


def test_the_machines_cpu_counters_give_busy_share_and_stolen_seconds(tmp_path, capsys, load_script):
    folder = write_log(tmp_path / "A1", "aaaaaaa", 14.0, 651, 1000)
    text = (folder / "reproduce.log").read_text().splitlines(keepends=True)
    # user nice system idle iowait irq softirq steal guest guest_nice, in ticks of 1/100 s
    start = "proc-stat start cpu  1000 0 100 5000 10 0 5 20 0 0\n"
    end = "proc-stat end cpu  181000 0 8100 25000 10 0 5 370 0 0\n"  # +180000 +8000 +20000 idle +350 steal
    (folder / "reproduce.log").write_text("".join(text[:1] + [start] + text[1:-1] + [end] + text[-1:]))
    load_script("ab_timings").main([str(folder)])
    # busy: (180000 + 8000 + 350) / (180000 + 8000 + 20000 + 350) = 90 %
    assert "rc=0  cpu busy 90%, steal 3.5 s" in capsys.readouterr().out
