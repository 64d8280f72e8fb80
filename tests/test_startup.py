"""Start-up: a first-run compilation says what it is doing instead of looking like a hang."""

from __future__ import annotations

import time

from synthgen.engine.pipeline import notice_if_slow


def test_a_slow_block_is_announced_and_timed(capsys):
    with notice_if_slow("compiling the kernels", after_s=0.05):
        time.sleep(0.3)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "synthgen: compiling the kernels ..." and err[1].startswith("synthgen: ... done in ")


def test_a_quick_block_says_nothing_even_when_it_fails(capsys):
    with notice_if_slow("compiling the kernels", after_s=0.5):
        pass
    try:
        with notice_if_slow("compiling the kernels", after_s=0.5):
            raise KeyError("boom")
    except KeyError:
        pass
    time.sleep(0.7)  # a timer left running would speak now
    assert capsys.readouterr().err == ""
