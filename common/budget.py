"""
A training run's time budget (train.py's --max_seconds): stop after that many seconds of training,
with the learning-rate schedule finished, on a fast machine and a slow one alike.

The quickstart must end within five minutes on any 2-core CPU, however fast the CPU is. So the run
stops at max_iters or when the time is up, whichever comes first, and the learning rate follows the
further of the two: where the time runs out first, the cosine reaches min_lr when it does.

Under torchrun every rank must stop at the same iteration and use the same learning rate, or the
ranks would wait for each other's gradients forever (or drift apart): all of them follow rank 0's
clock. Sharing it costs a broadcast and a wait for the GPU, so it is shared only on log steps; in
between, the schedule moves by the iterations alone.
"""

import time

import torch
import torch.distributed as dist


class TimeBudget:
    def __init__(self, max_seconds, seconds_before, share_every, ddp, device):
        self.max_seconds = max_seconds  # 0: no budget
        self.seconds_before = seconds_before  # spent by the run before it was resumed
        self.share_every = share_every  # iterations between readings of the clock (the log interval)
        self.ddp, self.device = ddp, device
        self.started = time.perf_counter()
        self.seconds = seconds_before  # of training so far, as of the latest reading

    def tick(self, iter_num):
        """Read the clock at the start of an iteration: every iteration in one process, every
        share_every iterations under torchrun (rank 0's reading, on every rank)."""
        seconds = self.seconds_before + time.perf_counter() - self.started
        if not self.ddp.enabled:
            self.seconds = seconds
        elif self.max_seconds and iter_num % self.share_every == 0:
            shared = torch.tensor(seconds, dtype=torch.float64, device=self.device)
            dist.broadcast(shared, src=0)
            self.seconds = shared.item()  # waits for the GPU: only on these steps

    def spent(self):
        return 0 < self.max_seconds <= self.seconds

    def schedule_position(self, iter_num, warmup_iters, decay_iters):
        """How far the learning-rate schedule has got, in iterations: the further of iter_num and the
        budget's used fraction of decay_iters. The warmup always counts iterations: the seconds spent
        compiling must not skip it, since Adam's first steps at the full learning rate set a small
        model back for thousands of iterations."""
        if not self.max_seconds or iter_num < warmup_iters:
            return iter_num
        return max(iter_num, self.seconds / self.max_seconds * decay_iters)

    def left(self):
        return max(0.0, self.max_seconds - self.seconds) if self.max_seconds else float("inf")
