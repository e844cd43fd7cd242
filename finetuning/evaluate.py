"""
Using a classifier, or an Ensemble of them: label probabilities for examples, the predicted labels
(for tagging, the best valid IOB2 sequence), and their scores against the gold labels
(finetuning/metrics.py); plus what finetune.py's --eval_file and --predict do with a finetuned run.
"""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import runtime
from common.cli import UserError
from common.progress import track
from common.sources import numbered_lines, write_json
from finetuning.bow import bow_baseline
from finetuning.metrics import format_report, headline, score
from finetuning.tagging import decode_iob2, most_frequent_tag_baseline, word_predictions
from finetuning.tasks import TASKS, collate, encode_row, load_examples, max_tokens, split_path, texts


class Ensemble(nn.Module):
    """Classifiers finetuned from the same start with different seeds, predicting together: their label
    probabilities are averaged. Each one's mistakes partly differ, so the average makes fewer."""

    def __init__(self, classifiers):
        super().__init__()
        self.members = nn.ModuleList(classifiers)

    def forward(self, idx, mask):
        probs = torch.stack([m(idx, mask).float().softmax(-1) for m in self.members])  # (M, B, L) or (M, B, T, L)
        return probs.mean(0).log()  # logits whose softmax is the mean probability


@torch.no_grad()
def predict_probs(classifier, examples, batch_size, device, ctx):
    """Label probabilities of each example: (L,) per text, or (n_tokens, L) for tagging."""
    classifier.eval()
    # batches of similar lengths pad less; padding never changes a result, so the order is free
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    probs = [None] * len(examples)
    for start in track(range(0, len(order), batch_size), "scoring", "batches"):
        chunk = order[start : start + batch_size]
        idx, mask, _ = collate([examples[i] for i in chunk], device)
        with ctx:
            logits = classifier(idx, mask)
        p = F.softmax(logits.float(), dim=-1).cpu()  # (B, L) or (B, T, L)
        for row, i in enumerate(chunk):
            probs[i] = p[row, : len(examples[i].ids)] if p.dim() == 3 else p[row]
    return probs


def per_text(probs, examples):
    """--truncate=chunks reads a long text as several examples: the text's label probabilities are the
    mean of its chunks'. -> (probs, examples), one of each per text (its first chunk's Example)."""
    firsts, groups = [], []
    for p, e in zip(probs, examples):
        if e.chunk == 0:  # a text's chunks follow its first one
            firsts.append(e)
            groups.append([])
        groups[-1].append(p)
    return [torch.stack(g).mean(0) for g in groups], firsts  # each (n_chunks, L) -> (L,); tagging: one chunk


def predicted_labels(probs, examples, labels):
    """The likeliest label of each text, or the likeliest valid IOB2 tag list of each sentence."""
    outside = F.one_hot(torch.tensor(0), len(labels)).float()  # (L,) certainly "O" (labels[0])
    out = []
    for p, e in zip(probs, examples):
        if e.first_pieces is None:
            out.append(labels[p.argmax().item()])
        else:  # a word cut off by max_len is outside every entity
            word_probs = torch.stack(word_predictions(list(p), e.first_pieces, outside))  # (n_words, L)
            out.append([labels[i] for i in decode_iob2(word_probs.clamp_min(1e-30).log(), labels)])
    return out


def gold_labels(examples):
    return [e.row["tags"] if "tags" in e.row else e.row["label"] for e in examples]


def evaluate(classifier, examples, labels, batch_size, device, ctx):
    probs, examples = per_text(predict_probs(classifier, examples, batch_size, device, ctx), examples)
    return score(gold_labels(examples), predicted_labels(probs, examples, labels), labels)


def texts_to_predict(spec):
    """--predict=TEXT, or FILE:path for every non-empty line of a file: (where, text) pairs."""
    if not spec.startswith("FILE:"):
        return [("--predict", spec)]
    path = spec.removeprefix("FILE:")
    return [(f"{path}:{lineno}", line) for lineno, line in numbered_lines(path) if line.strip()]


def evaluate_file(classifier, tokenizer, run, path, truncate, batch_size, device, ctx):
    """--eval_file: score a labelled file with a finetuned run (run: its first member's checkpoint
    dict, which holds the run's settings), reading long texts as truncate says; for tagging, beside
    the most-frequent-tag baseline."""
    task_name, labels = run["config"]["task"], run["labels"]
    max_len = max_tokens(run["config"], run["model_args"]["block_size"])
    examples = load_examples(path, task_name, tokenizer, max_len, truncate=truncate)
    report = evaluate(classifier, examples, labels, batch_size, device, ctx)
    report["eval_file"], report["truncate"] = str(path), truncate
    print(f"--- {path}\n{format_report(report)}")
    train_path = split_path(run["config"]["data_dir"], task_name, "train")
    if TASKS[task_name].per_token and train_path.is_file():  # the baseline needs the run's training words
        train_set = load_examples(train_path, task_name, tokenizer, max_len)
        report["baseline"] = most_frequent_tag_baseline(train_set, examples, labels)
        print(f"most-frequent-tag baseline: entity F1 {headline(report['baseline']):.4f}")
    return report


def predict(classifier, tokenizer, run, spec, truncate, batch_size, device, ctx):
    """--predict: print the label of a text (or of each line of FILE:path), with its probability;
    for tagging, each word/TAG. Long texts are read as truncate says."""
    task = TASKS[run["config"]["task"]]
    max_len = max_tokens(run["config"], run["model_args"]["block_size"])
    examples = []
    for where, text in texts_to_predict(spec):
        if not text.strip():
            raise UserError(f"{where}: empty text")
        row = {"tokens": text.split()} if task.per_token else {"text": text}
        examples.extend(encode_row(row, task, tokenizer, max_len, where, truncate))
    probs, examples = per_text(predict_probs(classifier, examples, batch_size, device, ctx), examples)
    for p, e, predicted in zip(probs, examples, predicted_labels(probs, examples, run["labels"])):
        if task.per_token:
            print(" ".join(f"{word}/{tag}" for word, tag in zip(e.row["tokens"], predicted)))
        else:
            print(f"{predicted}\t{p.max().item():.3f}\t{e.row['text']}")


def use_finetuned(classifier, tokenizer, members, cfg, device, truncate=None):
    """What finetune.py does with a finished run instead of training (the three values of its
    load_finetuned): --eval_file scores a labelled file into out_dir/eval_<its name>.json (a report per
    file scored, so scoring val after test keeps test's), --predict labels texts. Long texts are read
    as the run trained, unless truncate (--truncate given with them) says otherwise: a run trained on
    one window of each text may score better reading them whole (chunks); its report then gets a name
    of its own, eval_<name>_<truncate>.json."""
    classifier.to(device)
    ctx = runtime.autocast(device, runtime.pick_dtype(cfg.dtype, device))
    own = members[0]["config"].get("truncate", "head")  # runs from before --truncate kept the head
    truncate = truncate or own
    if cfg.eval_file:
        report = evaluate_file(classifier, tokenizer, members[0], cfg.eval_file, truncate, cfg.batch_size, device, ctx)
        name = Path(cfg.eval_file).stem + ("" if truncate == own else f"_{truncate}")
        path = Path(cfg.out_dir) / f"eval_{name}.json"
        write_json(report, path)
        print(f"wrote {path}")
    if cfg.predict:
        predict(classifier, tokenizer, members[0], cfg.predict, truncate, cfg.batch_size, device, ctx)


def score_split(classifier, name, examples, train_set, task, batch_size, device, ctx):
    """metrics.json's entries for one split: the classifier's report; for an Ensemble each member's
    alone too (what averaging adds); for tagging the most-frequent-tag baseline."""
    out = {name: evaluate(classifier, examples, task.labels, batch_size, device, ctx)}
    print(f"--- {name}\n{format_report(out[name])}")
    if hasattr(classifier, "members"):
        alone = [evaluate(m, examples, task.labels, batch_size, device, ctx) for m in classifier.members]
        out[f"{name}_members"] = alone
        print("each member alone: " + ", ".join(f"accuracy {r['accuracy']:.4f} headline {headline(r):.4f}"
                                                for r in alone))
    if task.per_token:
        out[f"{name}_baseline"] = most_frequent_tag_baseline(train_set, examples, task.labels)
        print(f"most-frequent-tag baseline: entity F1 {headline(out[f'{name}_baseline']):.4f}")
    return out


def score_run(classifier, members, splits, train_set, task, batch_size, device, ctx):
    """metrics.json's scores of a finished run: its size and iterations, then every split's report
    beside the baselines measured on the same rows (bag of words for texts, most frequent tag for words)."""
    metrics = {"trainable_params": sum(m["trainable_params"] for m in members),
               "total_params": sum(m["total_params"] for m in members), "iters": members[0]["max_iters"],
               "best_iter": [m["iter_num"] for m in members] if len(members) > 1 else members[0]["iter_num"]}
    for name, examples in splits.items():
        metrics.update(score_split(classifier, name, examples, train_set, task, batch_size, device, ctx))
    if not task.per_token:  # the bar to clear: 1-2-gram logistic regression fitted on the same training rows
        rows = {name: texts(examples) for name, examples in splits.items()}
        metrics["bow_baseline"] = bow_baseline(texts(train_set), rows, task.labels)
        print("bag-of-words baseline: " + ", ".join(f"{name} accuracy {r['accuracy']:.4f}"
                                                    for name, r in metrics["bow_baseline"].items()))
    return metrics
