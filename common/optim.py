"""
The optimizer and its step, shared by train.py and finetune.py: AdamW with decay on the matrices only,
float16's loss scaler, gradient clipping, the step itself.
"""

import torch


def adamw(module, weight_decay, learning_rate, betas, device_type):
    """AdamW over a module's trainable parameters that decays the 2-D weights (matmuls, embeddings)
    but not biases and LayerNorm gains (they are few, and a gain pulled towards 0 switches a feature
    off instead of regularising). Frozen parameters are left out, so finetuning only some skips the rest."""
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # the fused kernel does the whole update in a few launches; CUDA and CPU both have it
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type in ("cuda", "cpu"))


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
