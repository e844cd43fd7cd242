"""
Classifying with no finetuning at all: put the text in a prompt, optionally after a few solved
training examples (few-shot, as in the GPT-3 paper), and pick the label whose word the language
model finds likeliest next.

    python finetune.py config/finetune_sst2.py --zero_shot=True --shots=4
"""

import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from common.cli import UserError
from common.progress import track
from common.files import write_json
from finetuning.evaluate import gold_labels
from finetuning.metrics import classification_report, format_report
from finetuning.tasks import TASKS, Example, check_row, collate, load_examples, read_rows, split_path


@torch.no_grad()
def continuation_logprobs(gpt, contexts, continuations, batch_size, device):
    """log P(continuation | context) under the LM, summed over the continuation's tokens, for each
    pair of token-id lists. A context too long for the block loses its oldest tokens."""
    block = gpt.config.block_size
    scores = []
    for start in track(range(0, len(contexts), batch_size), "scoring prompts", "batches"):
        rows = []
        pairs = zip(contexts[start : start + batch_size], continuations[start : start + batch_size])
        for context, continuation in pairs:
            seq = (context + continuation)[-(block + 1):]
            rows.append(Example({}, seq[:-1], [-1] * (len(seq) - 1 - len(continuation)) + continuation))
        idx, mask, targets = collate(rows, device)  # targets (B, T): the continuation's tokens, else -1
        hidden = gpt.hidden_states(idx)  # (B, T, C)
        scored = targets != -1
        logp = F.log_softmax(gpt.lm_head(hidden[scored]).float(), dim=-1)  # (N, V): only the scored positions
        token_logp = logp.gather(1, targets[scored].unsqueeze(1)).squeeze(1)  # (N,)
        row_of = torch.arange(len(rows), device=device).unsqueeze(1).expand_as(targets)[scored]  # (N,)
        scores += torch.zeros(len(rows), device=device).index_add_(0, row_of, token_logp).tolist()
    return scores


def few_shot_prefix(task, train_rows, shots, seed):
    """shots solved training examples, one after another, the labels taking turns so that the
    prompt shows every label (a random draw from SMS spam would mostly show ham)."""
    rng = random.Random(seed)
    per_label = math.ceil(shots / len(task.labels))
    picks = {}
    for label in task.labels:
        rows = [row for row in train_rows if row["label"] == label]
        if len(rows) < per_label:
            raise UserError(f"--shots={shots} needs {per_label} training examples of {label!r}, found {len(rows)}")
        picks[label] = rng.sample(rows, per_label)
    demos = [picks[task.labels[i % len(task.labels)]][i // len(task.labels)] for i in range(shots)]
    return "".join(task.template.format(text=r["text"]) + task.verbalizers[r["label"]] + "\n\n" for r in demos)


# texts with no content (Zhao et al. 2021, "Calibrate before use", https://arxiv.org/abs/2102.09690):
# the label words' probabilities after them are what the prompt alone makes the model expect
CONTENT_FREE = ("N/A", "")


def label_scores(gpt, tokenizer, prefix, task, texts, batch_size, device):
    """(N, L) log P(label word | prompt) for each text put into the task's prompt after prefix."""
    verbalizers = [tokenizer.encode(task.verbalizers[label]) for label in task.labels]
    contexts = [tokenizer.encode(prefix + task.template.format(text=text)) for text in texts]
    scores = continuation_logprobs(gpt, [c for c in contexts for _ in verbalizers], verbalizers * len(texts),
                                   batch_size, device)
    return torch.tensor(scores).view(len(texts), len(verbalizers))  # (N, L)


def can_write(tokenizer, text):
    """Whether the tokenizer has tokens for text: a character-level one lacks what its corpus never held."""
    try:
        tokenizer.encode(text)
    except UserError:
        return False
    return True


def check_prompt_fits(tokenizer, task, name):
    """The task's prompt and label words are ours, not the user's: a model whose vocabulary can't write
    them can't be prompted at all, and the message must not blame the user's texts."""
    ours = task.template.format(text="") + "".join(task.verbalizers.values())
    if not can_write(tokenizer, ours):
        missing = "".join(sorted({c for c in ours if not can_write(tokenizer, c)}))
        raise UserError(f"--zero_shot: this model's vocabulary lacks {missing!r}, which the {name} task's "
                        f"own prompt {task.template!r} needs; prompt a model whose tokenizer covers it (a GPT-2 BPE "
                        f"model)")


def content_free_bias(gpt, tokenizer, prefix, task, batch_size, device):
    """(L,) log of the mean label probabilities (over the labels alone) after content-free texts. A
    model that favours a label whatever the text (the prompt, the shots' order, a common word) shows
    it here; subtracting it from every text's scores divides that preference out. A content-free text
    the model can't write (a character-level model without "/") is left out, and that is said."""
    texts = [text for text in CONTENT_FREE if can_write(tokenizer, text)]
    for text in sorted(set(CONTENT_FREE) - set(texts)):
        print(f"note: calibrating without the content-free text {text!r}: this model's vocabulary lacks its characters")
    scores = label_scores(gpt, tokenizer, prefix, task, texts, batch_size, device)  # (K, L)
    return scores.softmax(dim=1).mean(dim=0).log()


def zero_shot(gpt, tokenizer, cfg, device):
    """Classify with no training: the label whose verbalizer the LM gpt finds likeliest after the
    prompt, which holds cfg.shots solved examples and then the text to classify; and the same
    calibrated by the content-free scores. Scores val and the test split (or cfg.eval_file) into
    out_dir/zero_shot.json."""
    task = TASKS[cfg.task]
    if not task.verbalizers:
        raise UserError(f"--zero_shot works for text classification; {cfg.task} has no verbalizers")
    check_prompt_fits(tokenizer, task, cfg.task)
    gpt.to(device).eval()
    prefix = ""
    if cfg.shots:
        train_pairs = read_rows(split_path(cfg.data_dir, cfg.task, "train"), cfg.task)
        for where, row in train_pairs:
            check_row(row, task, where)
        prefix = few_shot_prefix(task, [row for _, row in train_pairs], cfg.shots, cfg.seed)
    files = {"eval": cfg.eval_file} if cfg.eval_file else {
        "val": split_path(cfg.data_dir, cfg.task, "val"), "test": split_path(cfg.data_dir, cfg.task, task.test_split)}
    bias = content_free_bias(gpt, tokenizer, prefix, task, cfg.batch_size, device)  # (L,)
    results = {"task": cfg.task, "init_from": cfg.init_from, "shots": cfg.shots, "template": task.template,
               "content_free_probs": dict(zip(task.labels, bias.exp().tolist()))}
    for name, path in files.items():
        examples = load_examples(path, cfg.task, tokenizer, max_len=None)  # checks the rows, and the tokenizer
        scores = label_scores(gpt, tokenizer, prefix, task, [e.row["text"] for e in examples], cfg.batch_size, device)
        for key, s in ((name, scores), (f"{name}_calibrated", scores - bias)):
            predicted = [task.labels[i] for i in s.argmax(dim=1).tolist()]
            results[key] = classification_report(gold_labels(examples), predicted, task.labels)
            print(f"--- {key}, {cfg.shots}-shot\n{format_report(results[key])}")
    write_json(results, Path(cfg.out_dir) / "zero_shot.json")
    print(f"wrote {cfg.out_dir}/zero_shot.json")
