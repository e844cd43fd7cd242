"""
Using a classifier, or an Ensemble of them: label probabilities for examples, the predicted labels
(for tagging, the best valid IOB2 sequence), and their scores against the gold labels
(finetuning/metrics.py) beside the baselines; plus what finetune.py's --eval_file and --predict do
with a finetuned run.
"""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import runtime
from common.cli import UserError
from common.progress import track
from common.files import numbered_lines, write_json
from finetuning.bow import bow_baseline
from finetuning.crf import CRF
from finetuning.feature_crf import feature_crf_baseline
from finetuning.metrics import classification_report, format_report, headline, score
from finetuning.tagging import most_frequent_tag_baseline, word_predictions
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


def crf_of(classifier):
    """The CRF of a --head=token_crf classifier, which decodes its tags; None for the other heads. (An
    Ensemble has no head: finetune.py never makes one of token_crf members.)"""
    return getattr(getattr(classifier, "head", None), "crf", None)


def word_log_probs(probs, examples, labels):
    """Each sentence's (n_words, L) log-probabilities of the tags, read at the words' first pieces."""
    outside = F.one_hot(torch.tensor(0), len(labels)).float()  # a word cut off by max_len: certainly "O"
    return [torch.stack(word_predictions(list(p), e.first_pieces, outside)).clamp_min(1e-30).log()
            for p, e in zip(probs, examples)]


def predicted_labels(probs, examples, labels, crf=None):
    """The likeliest label of each text, or the likeliest valid IOB2 tag list of each sentence: by Viterbi
    over crf's scores (a token_crf head's), or over its words' probabilities alone. Per-word argmax
    could say "O I-PER", a span that conlleval counts as a new entity."""
    if not examples or examples[0].first_pieces is None:  # texts, not tagged words
        return [labels[p.argmax().item()] for p in probs]
    # a CRF whose scores are all zero: a sentence's score is the sum of its words' log-probabilities
    crf = crf if crf is not None else CRF(len(labels))
    device = crf.transitions.device
    out = []
    # the emissions: a token_crf head's scores less one constant per word (log-softmax), which every path pays alike
    for log_probs in word_log_probs(probs, examples, labels):  # (n_words, L)
        one_sentence = torch.ones(1, len(log_probs), dtype=torch.bool, device=device)  # (1, n_words) mask
        tags = crf.viterbi(log_probs.unsqueeze(0).to(device), one_sentence, labels)[0]
        out.append([labels[i] for i in tags])
    return out


def gold_labels(examples):
    return [e.row["tags"] if "tags" in e.row else e.row["label"] for e in examples]


def evaluate(classifier, examples, labels, batch_size, device, ctx):
    return evaluate_probs(classifier, examples, labels, batch_size, device, ctx)[0]


def evaluate_probs(classifier, examples, labels, batch_size, device, ctx):
    """(report, each text's label probabilities, its first Example): what evaluate scores, and the
    probabilities it scored, for combining with another model's."""
    probs, examples = per_text(predict_probs(classifier, examples, batch_size, device, ctx), examples)
    report = score(gold_labels(examples), predicted_labels(probs, examples, labels, crf_of(classifier)), labels)
    return report, probs, examples


def texts_to_predict(spec):
    """--predict=TEXT, or FILE:path for every non-empty line of a file: (where, text) pairs."""
    if not spec.startswith("FILE:"):
        return [("--predict", spec)]
    path = spec.removeprefix("FILE:")
    lines = [(f"{path}:{lineno}", line) for lineno, line in numbered_lines(path) if line.strip()]
    if not lines:
        raise UserError(f"{path}: no text to predict (the file is empty or holds only blank lines)")
    return lines


def evaluate_file(classifier, tokenizer, run, path, truncate, batch_size, device, ctx):
    """--eval_file: score a labelled file with a finetuned run (run: its first member's checkpoint
    dict, which holds the run's settings), reading long texts as truncate says and sentences as the run
    read them; for tagging, beside the most-frequent-tag baseline."""
    task_name, labels = run["config"]["task"], run["labels"]
    max_len = max_tokens(run["config"], run["model_args"]["block_size"])
    examples = load_examples(path, task_name, tokenizer, max_len, truncate=truncate, reading=reading_of(run))
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
        examples.extend(encode_row(row, task, tokenizer, max_len, where, truncate, reading_of(run)))
    probs, examples = per_text(predict_probs(classifier, examples, batch_size, device, ctx), examples)
    tagged = predicted_labels(probs, examples, run["labels"], crf_of(classifier))
    for p, e, predicted in zip(probs, examples, tagged):
        if task.per_token:
            print(" ".join(f"{word}/{tag}" for word, tag in zip(e.row["tokens"], predicted)))
        else:
            print(f"{predicted}\t{p.max().item():.3f}\t{e.row['text']}")


def reading_of(run):
    """How the run's tagger read a sentence (--reading); runs from before the option read left to right."""
    return run["config"].get("reading", "causal")


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
    alone too (what averaging adds); for tagging the most-frequent-tag baseline. Also returns the
    classifier's label probabilities of each text."""
    report, probs, _ = evaluate_probs(classifier, examples, task.labels, batch_size, device, ctx)
    out = {name: report}
    print(f"--- {name}\n{format_report(report)}")
    if hasattr(classifier, "members"):
        alone = [evaluate(m, examples, task.labels, batch_size, device, ctx) for m in classifier.members]
        out[f"{name}_members"] = alone
        print("each member alone: " + ", ".join(f"accuracy {r['accuracy']:.4f} headline {headline(r):.4f}"
                                                for r in alone))
    if task.per_token:
        out[f"{name}_baseline"] = most_frequent_tag_baseline(train_set, examples, task.labels)
        print(f"most-frequent-tag baseline: entity F1 {headline(out[f'{name}_baseline']):.4f}")
    return out, probs


def score_run(classifier, members, splits, train_set, task, batch_size, device, ctx):
    """metrics.json's scores of a finished run: its size and iterations, then every split's report
    beside the baselines measured on the same rows (bag of words for texts; for words the most frequent
    tag, and a CRF over hand-made word features)."""
    metrics = {"trainable_params": sum(m["trainable_params"] for m in members),
               "total_params": sum(m["total_params"] for m in members), "iters": members[0]["max_iters"],
               "best_iter": [m["iter_num"] for m in members] if len(members) > 1 else members[0]["iter_num"]}
    gpt_probs = {}
    for name, examples in splits.items():
        reports, gpt_probs[name] = score_split(classifier, name, examples, train_set, task, batch_size, device, ctx)
        metrics.update(reports)
    rows = {name: texts(examples) for name, examples in splits.items()}
    if task.per_token:  # the classic tagger to beat: fitted once, on the same training rows, scored on every split
        crf, metrics["feature_crf_baseline"] = feature_crf_baseline(texts(train_set), rows, task.labels)
        print("feature-CRF baseline: " + ", ".join(f"{name} entity F1 {headline(r):.4f}"
                                                   for name, r in metrics["feature_crf_baseline"].items()))
        word_scores = {name: word_log_probs(gpt_probs[name], splits[name], task.labels) for name in splits}
        metrics["gpt_plus_features"] = combine_tags(crf, word_scores, rows)
        print(f"GPT + feature CRF, weight {metrics['gpt_plus_features']['gpt_weight']} on the GPT (chosen on val): "
              + ", ".join(f"{name} entity F1 {headline(metrics['gpt_plus_features'][name]):.4f}" for name in rows))
    else:  # the bar to clear: 1-2-gram logistic regression fitted on the same training rows
        bow, metrics["bow_baseline"] = bow_baseline(texts(train_set), rows, task.labels)
        print("bag-of-words baseline: " + ", ".join(f"{name} accuracy {r['accuracy']:.4f}"
                                                    for name, r in metrics["bow_baseline"].items()))
        bow_probs = {name: bow.probs([r["text"] for r in split_rows]) for name, split_rows in rows.items()}
        metrics["gpt_plus_bow"] = combine(gpt_probs, bow_probs, rows, task.labels)
        print(f"GPT + bag-of-words, weight {metrics['gpt_plus_bow']['gpt_weight']} on the GPT (chosen on val): "
              + ", ".join(f"{name} accuracy {metrics['gpt_plus_bow'][name]['accuracy']:.4f}" for name in rows))
    return metrics


TAG_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # the GPT's weight beside the feature CRF's scores; 0: the CRF alone


def combine_tags(crf, word_scores, rows):
    """What the GPT adds to the hand-made features: the feature CRF decodes each sentence with w times
    the GPT tagger's log-probabilities added to its own emission scores (its transitions and IOB2's
    constraints kept), with the w of TAG_WEIGHTS that scores best on val (val's tags choose w and
    nothing else), scored on every split. word_scores: {split: each sentence's (n_words, L)}."""
    def report(name, w):
        predicted = crf.predict(rows[name], [w * s for s in word_scores[name]])
        return score([r["tags"] for r in rows[name]], predicted, crf.labels)
    best = max(TAG_WEIGHTS, key=lambda w: headline(report("val", w)))
    return {"gpt_weight": best, **{name: report(name, best) for name in rows}}


COMBINE_WEIGHTS = [i / 10 for i in range(11)]  # the GPT's weight; 0 is bag-of-words alone, 1 the GPT alone


def combine(gpt_probs, bow_probs, rows, labels):
    """What the GPT knows that the words' counts do not: each text's label probabilities averaged
    between the two models, w * GPT + (1 - w) * bag-of-words, with the w of COMBINE_WEIGHTS that scores
    best on val (val's labels choose w and nothing else), scored on every split. gpt_probs, bow_probs:
    {split: each text's (L,) probabilities}; rows: {split: the texts' rows}."""
    def report(name, w):
        mixed = w * torch.stack(gpt_probs[name]) + (1 - w) * bow_probs[name]  # (N, L)
        return classification_report([r["label"] for r in rows[name]], [labels[k] for k in mixed.argmax(1).tolist()],
                                     labels)
    best = max(COMBINE_WEIGHTS, key=lambda w: headline(report("val", w)))
    return {"gpt_weight": best, **{name: report(name, best) for name in rows}}
