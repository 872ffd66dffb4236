"""Progress reports where no terminal is attached: plain lines, not an invisible bar."""

from __future__ import annotations

import io

from lit_ebm.progress import Progress


def test_without_a_terminal_progress_is_written_as_lines() -> None:
    stream = io.StringIO()
    with Progress(10, "EBM: samples", every=0.0, stream=stream) as progress:
        progress.update(4)
        progress.update(6)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("EBM: samples: 4/10 img (40%), ")
    assert lines[1].startswith("EBM: samples: 10/10 img (100%), ") and "about 0 s left" in lines[1]


def test_a_loop_shorter_than_the_interval_stays_silent() -> None:
    stream = io.StringIO()
    with Progress(3, "metrics", unit="rows", every=3600.0, stream=stream) as progress:
        for _ in range(3):
            progress.update(1)
    assert stream.getvalue() == ""
