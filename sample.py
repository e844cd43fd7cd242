"""
Sample text from a trained model, or from OpenAI's GPT-2 weights.

    python sample.py                                    # from the default run, out-shakespeare-char
    python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3 --max_new_tokens=200
    python sample.py --start=FILE:prompt.txt --temperature=0.7 --top_p=0.9
    python sample.py --max_new_tokens=2000 --window_step=64   # long texts fast, not exact (see model.KVCache)
    python sample.py --init_from=path/to/gpt2 --start="The meaning of life is"   # a Hugging Face GPT-2 folder

Sampling is the language model's own loop: read the context, turn the logits of the last position into
probabilities, draw the next token, append it, repeat (GPT.generate). The options below shape the
drawing: temperature flattens or sharpens the probabilities, top_k and top_p cut off the unlikely tail.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from common import runtime
from common.checkpoint import load_checkpoint, load_gpt
from common.cli import UserError, check_choice, check_ranges, parse_config, run_main
from common.files import read_prompt
from model import ATTENTION_KINDS


@dataclass
class SampleConfig:
    out_dir: str = "out-shakespeare-char"  # a train.py run
    init_from: str = ""  # "": the run in out_dir; or a GPT-2 Hugging Face folder, which out_dir then plays no part in
    checkpoint: str = "best"  # "best" (lowest val loss) or "last"
    start: str = "\n"  # the prompt, or FILE:path to read it from a file
    num_samples: int = 2
    max_new_tokens: int = 500
    temperature: float = 0.8  # 1.0 samples the model's distribution, lower is more conservative, 0 is greedy
    top_k: int | None = 200  # keep only the k likeliest tokens (None: all)
    top_p: float | None = None  # keep the likeliest tokens whose probabilities add up to p (None: all)
    kv_cache: bool = True  # reuse keys and values of earlier tokens instead of recomputing them
    window_step: int = 1  # past block_size, slide the context this many tokens at once (see model.KVCache)
    seed: int = 1337  # the same seed and prompt give the same samples
    device: str = "auto"
    dtype: str = "auto"
    attention: str = "auto"  # "manual", "sdpa", or auto: sdpa on a GPU, manual elsewhere, whatever the run trained with

    def __post_init__(self):
        check_ranges(self, at_least_one=("num_samples", "window_step"), non_negative=("max_new_tokens",))
        if self.temperature != 0 and self.temperature < 1e-3:  # as greedy as 0, and tiny values overflow the logits
            raise ValueError(f"temperature must be 0 (greedy) or at least 0.001, got {self.temperature}")
        if self.top_k is not None and self.top_k <= 0:
            raise ValueError(f"top_k must be positive (or None), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (or None), got {self.top_p}")
        check_choice(self, "attention", ("auto", *ATTENTION_KINDS))
        check_choice(self, "checkpoint", ("best", "last"))


def generate_text(model, tokenizer, prompt, max_new_tokens, temperature=0.8, top_k=200, top_p=None,
                  num_samples=1, use_cache=True, window_step=1):
    """Continue prompt num_samples times; returns the texts, prompt included."""
    ids = tokenizer.encode(prompt)  # a character-level tokenizer refuses characters it never saw, in one line
    if not ids:
        raise UserError("the prompt is empty; give --start some text (a newline is fine)")
    if len(ids) > model.config.block_size:
        raise UserError(f"the prompt is {len(ids)} tokens long, more than the model's block_size "
                        f"({model.config.block_size}); shorten it")
    if window_step > model.config.block_size:
        raise UserError(f"--window_step={window_step} is more than the model's block_size "
                        f"({model.config.block_size}); use 1 to {model.config.block_size}")
    device = next(model.parameters()).device
    # the same prompt in every row: the rows then differ only by the tokens each one draws
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)  # (num_samples, T)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         use_cache=use_cache, window_step=window_step)  # (num_samples, T + max_new_tokens)
    return [tokenizer.decode(row.tolist()) for row in out]


def say_if_finetuned(out_dir, checkpoint):
    """A finetune.py run's best.pt holds a classifier: its body is a GPT still, but finetuning taught it
    to label texts, not to continue them, so its samples show what is left of the language model."""
    path = Path(out_dir) / f"{checkpoint}.pt"
    if path.is_file() and "head" in load_checkpoint(path, peek=True):
        print(f"note: {path} is a finetuned classifier (finetune.py); these samples come from its GPT body, "
              f"whose next-token head finetuning did not train")


def main(argv):
    cfg = parse_config(SampleConfig, argv)
    device = runtime.pick_device(cfg.device)
    dtype = runtime.pick_dtype(cfg.dtype, device)
    torch.manual_seed(cfg.seed)  # the draws of multinomial sampling, on the CPU and the GPU alike
    # a train.py run (the one in out_dir) or a GPT-2 Hugging Face directory
    if not cfg.init_from:
        say_if_finetuned(cfg.out_dir, cfg.checkpoint)
    model, tokenizer = load_gpt(cfg.init_from or cfg.out_dir, cfg.checkpoint,
                                attention=runtime.pick_attention(cfg.attention, device))
    model.eval().to(device)  # eval: dropout off, so the model is the one that was trained
    prompt = read_prompt(cfg.start)
    with runtime.autocast(device, dtype):  # the matmuls in bfloat16 where the hardware has it, as in training
        texts = generate_text(model, tokenizer, prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k,
                              cfg.top_p, cfg.num_samples, cfg.kv_cache, cfg.window_step)
    for text in texts:
        print(text)
        print("-" * 40)


if __name__ == "__main__":
    run_main(main)
