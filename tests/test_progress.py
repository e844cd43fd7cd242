"""
common/progress.py: step i of n, rate and time left; redrawn in place in a terminal, plain lines in a log.
"""

import io

import pytest

from common.progress import KEEP_AFTER, LOG_EVERY, Progress, format_duration, format_rate, track


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (7.4, "7s"), (59.6, "1m00s"), (190, "3m10s"),
                                          (3599, "59m59s"), (3725, "1h02m")])
def test_durations_read_like_a_clock(seconds, text):
    assert format_duration(seconds) == text


def test_rates_read_naturally_fast_or_slow():
    assert format_rate(31, 10.0, "batches") == "3.1 batches/s"
    assert format_rate(52_412, 10.0, "characters") == "5,241 characters/s"
    assert format_rate(4, 10.0, "cells") == "2.5 s each"
    assert format_rate(0, 10.0, "steps") == "- steps/s"


def test_time_left_is_the_steps_left_at_the_rate_so_far():
    clock = Clock()
    progress = Progress(40, "val", "batches", file=io.StringIO(), clock=clock)
    clock.now += 5.0
    assert progress.describe(10) == "val: 10/40 batches, 2.0 batches/s, eta 15s"
    clock.now += 15.0
    assert progress.describe(40) == "val: 40/40 batches, 2.0 batches/s, done in 20s"


def test_no_time_left_is_guessed_before_the_first_step():
    progress = Progress(40, "val", "batches", file=io.StringIO(), clock=Clock())
    assert progress.eta(0) == "-" and progress.describe(0) == "val: 0/40 batches, - batches/s, eta -"


def test_a_resumed_job_counts_only_its_own_steps_in_the_rate():
    clock = Clock()
    progress = Progress(100, "train", start=50, file=io.StringIO(), clock=clock)
    clock.now += 10.0
    assert progress.describe(60) == "train: 60/100 steps, 1.0 steps/s, eta 40s"  # not 6 steps/s


def test_a_terminal_line_is_redrawn_in_place_and_ended_once():
    clock, out = Clock(), Terminal()
    progress = Progress(3, "job", file=out, clock=clock)
    for done in (1, 2, 3):
        clock.now += KEEP_AFTER
        progress.update(done)
    progress.close()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("done in 15s\n")
    assert [part.rstrip() for part in text.split("\r")[1:]][:2] == ["job: 1/3 steps, 5.0 s each, eta 10s",
                                                                     "job: 2/3 steps, 5.0 s each, eta 5s"]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_under_torchrun_only_the_first_process_reports(rank, monkeypatch):
    monkeypatch.setenv("RANK", rank)
    clock, out = Clock(), io.StringIO()
    progress = Progress(2, "val", "batches", file=out, clock=clock)
    for done in (1, 2):
        clock.now += KEEP_AFTER
        progress.update(done)
    progress.close()
    assert (out.getvalue() != "") == (rank == "0")


def test_a_short_job_wipes_its_terminal_line():
    clock, out = Clock(), Terminal()
    progress = Progress(2, "job", file=out, clock=clock)
    progress.update(1)
    progress.update(2)
    progress.close()
    assert "\n" not in out.getvalue() and out.getvalue().endswith("\r")


def test_a_log_gets_plain_lines_now_and_then():
    clock, out = Clock(), io.StringIO()
    progress = Progress(1000, "job", file=out, clock=clock)
    for done in range(1, 1001):
        clock.now += 0.125  # 125 s in all
        progress.update(done)
    progress.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # a first line once the job has run KEEP_AFTER seconds, then one every LOG_EVERY, and the last
    assert 3 <= len(lines) <= 2 + 125 / LOG_EVERY
    assert lines[0] == "job: 40/1,000 steps, 8.0 steps/s, eta 2m00s"
    assert lines[-1] == "job: 1,000/1,000 steps, 8.0 steps/s, done in 2m05s"


def test_a_short_job_stays_out_of_a_log():
    clock, out = Clock(), io.StringIO()
    progress = Progress(10, "job", file=out, clock=clock)
    for done in range(1, 11):
        clock.now += 0.1
        progress.update(done)
    progress.close()
    assert out.getvalue() == ""


def test_track_yields_every_item_in_order_and_a_short_job_prints_nothing(capsys):
    assert list(track(["a", "b", "c"], "job")) == ["a", "b", "c"]
    assert capsys.readouterr().out == ""  # pytest's captured stdout is no terminal: a log
