"""
The optimizer step that train.py and finetune.py share: float16's loss scaler, gradient clipping,
the step itself. (The optimizer, AdamW with decay on the matrices only, is model.adamw.)
"""

import torch


def grad_scaler(device, dtype, state=None):
    """The loss scaler of a training loop: float16 gradients underflow to 0 unless the loss is scaled
    up first; bfloat16 and float32 need none (the scaler is then a no-op). state: a checkpoint's
    scaler state to go on from; {} (saved by a run in another dtype) or None starts afresh."""
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=dtype == "float16")
    if scaler.is_enabled() and state:
        scaler.load_state_dict(state)
    return scaler


def optimizer_step(model, optimizer, scaler, grad_clip):
    """Clip the gradient's norm to grad_clip (0: no clipping), step, and clear the gradients."""
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradient, not the float16-scaled one
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)  # skipped if float16 gradients overflowed to inf; a plain step otherwise
    scaler.update()  # float16: a smaller scale after an overflow, a larger one after a run of good steps
    optimizer.zero_grad(set_to_none=True)  # None rather than zeros: backward then writes instead of adding
