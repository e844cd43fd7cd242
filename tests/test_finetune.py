"""
Finetuning (finetune.py, metrics.py): the scores on hand-computed cases, which weights each train
mode trains, and whole runs of a tiny model on tiny data: train, --eval_file, --predict, zero-shot,
and the one-line errors for bad input. The runs start from models with a character tokenizer, so
they need no GPT-2 files; zero- and few-shot run on a model built so that the answer is known.

    python -m pytest tests/test_finetune.py -q
"""

import contextlib
import json
import math
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tools import bench_finetune
import finetune
from common.checkpoint import load_checkpoint, save_checkpoint
from common.cli import UserError
from conftest import assert_close, max_error, tiny_gpt
from finetune import Classifier, FinetuneConfig, TRAIN_MODES
from finetuning.evaluate import Ensemble, combine, evaluate, per_text
from finetuning.heads import build_head
from finetuning.metrics import classification_report, entity_report, entity_spans
from finetuning import prompting
from finetuning.prompting import continuation_logprobs, few_shot_prefix
from finetuning.tasks import Example, collate, cut, encode_row, texts
from common.tokenizer import CharTokenizer
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent
CHARS = "\n" + "".join(map(chr, range(32, 127)))  # a character vocabulary for every text these tests write

# ----------------------------------------------------------------------------- metrics, by hand


def test_classification_report_hand_case():
    gold = ["ham", "ham", "ham", "spam", "spam"]
    predicted = ["ham", "spam", "ham", "spam", "ham"]
    r = classification_report(gold, predicted, ["ham", "spam"])
    assert r["confusion"] == [[2, 1], [1, 1]]
    assert r["accuracy"] == pytest.approx(3 / 5)
    assert r["per_class"]["ham"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert r["per_class"]["spam"] == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2})
    assert r["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_a_never_predicted_class_scores_zero_not_nan():
    r = classification_report(["ham", "spam"], ["ham", "ham"], ["ham", "spam"])
    assert r["per_class"]["spam"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["per_class"]["ham"]["precision"] == 0.5 and r["per_class"]["ham"]["recall"] == 1.0


@pytest.mark.parametrize("tags,spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
    (["B-PER", "B-PER"], {("PER", 0, 1), ("PER", 1, 2)}),  # B starts a new entity
    (["O", "I-ORG", "I-ORG"], {("ORG", 1, 3)}),  # I after O starts one, as conlleval reads it
    (["B-PER", "I-ORG"], {("PER", 0, 1), ("ORG", 1, 2)}),  # a change of type ends one
    (["I-MISC"], {("MISC", 0, 1)}),
    (["O", "O"], set()),
])
def test_entity_spans(tags, spans):
    assert entity_spans(tags) == spans


def test_entity_report_counts_only_exact_spans_of_the_right_type():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG"]]
    predicted = [
        ["B-PER", "I-PER", "O", "B-ORG"],  # PER exact: correct; LOC predicted as ORG: wrong type
        ["B-ORG", "I-ORG", "O"],  # ORG with a partial span: not counted
    ]
    r = entity_report(gold, predicted)
    assert (r["overall"]["correct"], r["overall"]["predicted"], r["overall"]["gold"]) == (1, 3, 3)
    assert r["overall"]["precision"] == pytest.approx(1 / 3)
    assert r["overall"]["recall"] == pytest.approx(1 / 3)
    assert r["overall"]["f1"] == pytest.approx(1 / 3)
    assert r["per_type"]["PER"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0})
    assert r["per_type"]["ORG"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0})
    assert r["per_type"]["LOC"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0})


def test_entity_f1_hand_case_with_unequal_precision_and_recall():
    gold = [["B-PER", "O", "B-LOC", "I-LOC", "O", "B-MISC"]]
    predicted = [["B-PER", "O", "B-LOC", "I-LOC", "O", "O"]]
    overall = entity_report(gold, predicted)["overall"]
    assert overall["precision"] == 1.0 and overall["recall"] == pytest.approx(2 / 3)
    assert overall["f1"] == pytest.approx(2 * 1.0 * (2 / 3) / (1.0 + 2 / 3))


# ----------------------------------------------------------------------------- train modes


def head_params(n_embd, n_labels):
    return n_embd * n_labels + n_labels


@pytest.mark.parametrize("mode", list(TRAIN_MODES))
def test_trainable_parameters_of_each_mode(mode):
    gpt = tiny_gpt(seed=2)
    C, L, n_labels = gpt.config.n_embd, gpt.config.n_layer, 2
    model = Classifier(gpt, build_head("last", C, n_labels))
    cfg = FinetuneConfig(train=mode, last_n=1, lora_rank=2)
    total_before = sum(p.numel() for p in model.parameters())
    TRAIN_MODES[mode](model, cfg)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    block = sum(p.numel() for p in gpt.transformer.h[-1].parameters())
    ln_f = 2 * C
    if mode == "full":
        assert count == total_before
    elif mode == "head":
        assert trainable == {"head.classifier.weight", "head.classifier.bias"}
        assert count == head_params(C, n_labels)
    elif mode == "last_n":
        assert count == block + ln_f + head_params(C, n_labels)
        assert all(n.startswith(("gpt.transformer.h.1.", "gpt.transformer.ln_f.", "head.")) for n in trainable)
    elif mode == "lora":
        lora = L * 2 * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))  # r * (in + out) per layer
        assert count == lora + head_params(C, n_labels)
        assert all(n.endswith(("lora_A", "lora_B")) or n.startswith("head.") for n in trainable)
    elif mode == "adapter":
        m = cfg.adapter_size
        adapters = L * 2 * ((C * m + m) + (m * C + C))  # two per block, each down (C -> m) and up (m -> C)
        assert count == adapters + head_params(C, n_labels)
        assert all(".adapter." in n or n.startswith("head.") for n in trainable)
    elif mode == "prefix":
        prefix = 2 * L * cfg.prefix_len * C  # keys and values: nh * hs = C numbers per position and layer
        assert count == prefix + head_params(C, n_labels)
        assert trainable == {"prefix.k", "prefix.v", "head.classifier.weight", "head.classifier.bias"}
    else:
        pytest.fail(f"no expected count for train mode {mode!r}; add one here")


def test_adapters_start_as_the_identity_and_only_they_learn():
    gpt = tiny_gpt(seed=3)
    idx = torch.randint(gpt.config.vocab_size, (2, 10))
    before = gpt.hidden_states(idx)
    frozen = {name: p.clone() for name, p in gpt.named_parameters()}
    model = Classifier(gpt, build_head("last", gpt.config.n_embd, 2))
    TRAIN_MODES["adapter"](model, FinetuneConfig(train="adapter", adapter_size=4))
    assert_close(gpt.hidden_states(idx), before, 1e-6, "adapted GPT at the start")

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # the first step moves only up (down's gradient is 0 while up is); the second, down too
        model(idx, torch.ones_like(idx, dtype=torch.bool)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert max_error(gpt.hidden_states(idx), before) > 1e-3  # the adapters now change the function
    adapted = {name.replace(".base.", "."): p for name, p in gpt.named_parameters() if ".adapter." not in name}
    assert all(torch.equal(adapted[name], p) for name, p in frozen.items())  # and the body never moved
    assert all(p.abs().sum() > 0 for name, p in gpt.named_parameters() if name.endswith("adapter.up.weight"))


def test_prefix_starts_as_its_tokens_before_the_text_and_only_it_learns():
    gpt = tiny_gpt(seed=4)
    P, T = 5, 9
    model = Classifier(gpt, build_head("token", gpt.config.n_embd, 3))
    TRAIN_MODES["prefix"](model, FinetuneConfig(task="conll2003", train="prefix", prefix_len=P))
    prefix = model.prefix
    idx = torch.randint(gpt.config.vocab_size, (2, T))
    # the prefix's keys and values are those of its start tokens: the text reads as if they came first
    with_tokens = gpt.hidden_states(torch.cat([prefix.start_ids.expand(2, -1), idx], dim=1))[:, P:]  # (2, T, C)
    assert_close(gpt.hidden_states(idx, prefix.cache(2)), with_tokens, 1e-5, "prefix vs its tokens", relative=True)

    frozen = {name: p.clone() for name, p in gpt.named_parameters()}
    k0 = prefix.k.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(idx, torch.ones_like(idx, dtype=torch.bool)).sum().backward()
    optimizer.step()
    assert max_error(prefix.k, k0) > 0 and all(torch.equal(frozen[n], p) for n, p in gpt.named_parameters())


def test_last_n_larger_than_the_model_is_an_error():
    model = Classifier(tiny_gpt(), build_head("last", 32, 2))
    with pytest.raises(UserError, match="--last_n=5 but the model has only 2 blocks"):
        TRAIN_MODES["last_n"](model, FinetuneConfig(train="last_n", last_n=5))


# ----------------------------------------------------------------------------- batching and the LM score


def test_collate_pads_on_the_right():
    task = finetune.TASKS["conll2003"]
    tok = CharTokenizer(CHARS)  # one token per character: "EU BRUSSELS" is 11, "Peter" 5
    rows = [{"tokens": ["EU", "BRUSSELS"], "tags": ["B-ORG", "B-LOC"]}, {"tokens": ["Peter"], "tags": ["B-PER"]}]
    examples = [e for r in rows for e in encode_row(r, task, tok, 64, "test")]
    idx, mask, targets = collate(examples, "cpu")
    assert mask.tolist() == [[True] * 11, [True] * 5 + [False] * 6]
    assert idx[0].tolist() == tok.encode("EU BRUSSELS") and idx[1, :5].tolist() == tok.encode("Peter")
    # B-ORG on "E", B-LOC on " BRUSSELS"'s first piece (its space), B-PER on "P"; -1 elsewhere and on padding
    assert targets.tolist() == [[3, -1, 5] + [-1] * 8, [1] + [-1] * 10]


@pytest.mark.parametrize("heads", [["last", "mean", "mlp"], ["token", "token"]])
def test_ensemble_averages_its_members_probabilities(heads):
    members = [Classifier(tiny_gpt(seed=s), build_head(head, 32, 5)) for s, head in enumerate(heads)]
    ensemble = Ensemble(members).eval()
    idx = torch.randint(0, 37, (3, 9))
    mask = torch.arange(9) < torch.tensor([[9], [5], [1]])  # (3, 9): rows of 9, 5 and 1 real tokens
    expected = torch.stack([m(idx, mask).softmax(-1) for m in members]).mean(0)  # (3, 5) or (3, 9, 5)
    assert_close(ensemble(idx, mask).softmax(-1), expected, 1e-6, "ensemble vs mean of member probabilities")


def test_continuation_logprobs_matches_the_full_softmax():
    gpt = tiny_gpt(seed=7)
    contexts, continuations = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [3] * 20], [[10, 11], [12], [13, 14]]
    scores = continuation_logprobs(gpt, contexts, continuations, batch_size=2, device="cpu")
    for context, continuation, score in zip(contexts, continuations, scores):
        seq = torch.tensor(context + continuation)[-(gpt.config.block_size + 1):]  # the block is 16
        logp = F.log_softmax(gpt(seq[None, :-1])[0][0], dim=-1)  # (T, V)
        n = len(continuation)
        expected = logp[-n:].gather(1, seq[-n:, None]).sum()
        assert_close(torch.tensor(score), expected, 1e-4, f"log P({continuation} | {context[:4]}...)")


# ----------------------------------------------------------------------------- whole runs


def save_model(run_dir, gpt, tokenizer_meta):
    """A train.py-style run directory holding the model as its best.pt."""
    run_dir.mkdir(parents=True)
    save_checkpoint({"model": gpt.state_dict(), "model_args": asdict(gpt.config), "config": {},
                     "tokenizer": tokenizer_meta, "iter_num": 0, "best_val_loss": 9.9}, run_dir / "best.pt")
    return run_dir


def save_run(run_dir, vocab_size, tokenizer_meta, seed=0):
    """A train.py-style run directory holding a tiny random model's best.pt."""
    torch.manual_seed(seed)
    config = GPTConfig(block_size=48, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=16)
    return save_model(run_dir, GPT(config), tokenizer_meta)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return save_run(tmp_path_factory.mktemp("pre") / "run", len(CHARS), {"kind": "char", "chars": CHARS})


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


SPAM = ["WIN a FREE prize now, call 0800", "URGENT! You have won cash, text CLAIM", "Free entry: txt WIN to 80082"]
HAM = ["see you at lunch", "ok I am on my way home", "can you pick up some milk?", "haha that was fun last night"]


@pytest.fixture(scope="module")
def sms_data(tmp_path_factory):
    """A tiny SMS-like task: train, val and test splits."""
    d = tmp_path_factory.mktemp("sms")
    rows = [{"text": t, "label": "spam"} for t in SPAM] + [{"text": t, "label": "ham"} for t in HAM]
    for split in ("train", "val", "test"):
        write_jsonl(d / f"{split}.jsonl", rows)
    return d


def run(argv):
    finetune.main([str(a) for a in argv])


QUICK = ["--device=cpu", "--max_iters=4", "--eval_interval=2", "--batch_size=4", "--warmup_iters=1", "--learning_rate=1e-3"]


def test_test_false_scores_val_only(tmp_path, pretrained, sms_data):
    # while settings are chosen on val, the test split stays unread
    out = tmp_path / "out"
    run([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out}", "--test=False", *QUICK])
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test" not in metrics and set(metrics["bow_baseline"]) == {"val"}


@pytest.mark.parametrize("mode,head", [("full", "last"), ("lora", "attn_pool"), ("adapter", "mean"),
                                       ("prefix", "last")])
def test_finetune_then_evaluate_and_predict(tmp_path, pretrained, sms_data, capsys, mode, head):
    out = tmp_path / "out"
    run([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out}", f"--train={mode}",
         f"--head={head}", *QUICK])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"] == mode and metrics["head"] == head
    assert set(metrics["val"]["per_class"]) == {"ham", "spam"} and metrics["test"]["n"] == 7
    # beside the bag-of-words baseline, fitted on the same training rows and scored on the same splits
    assert set(metrics["bow_baseline"]) == {"val", "test"} and metrics["bow_baseline"]["test"]["n"] == 7
    assert set(metrics["gpt_plus_bow"]) == {"gpt_weight", "val", "test"} and metrics["gpt_plus_bow"]["test"]["n"] == 7
    # the saved run is a plain GPT (LoRA merged; adapters and prefix beside it), and it scores val as
    # the model did while training
    ckpt = load_checkpoint(out / "best.pt")
    assert not any("lora" in name or "adapter" in name for name in ckpt["model"])
    assert ("adapters" in ckpt) == (mode == "adapter") and ("prefix" in ckpt) == (mode == "prefix")
    assert metrics["val"] == ckpt["val"]

    eval_file = write_jsonl(tmp_path / "eval.jsonl", [{"text": SPAM[0], "label": "spam"}, {"text": HAM[0], "label": "ham"}])
    run([f"--out_dir={out}", f"--eval_file={eval_file}"])
    report = json.loads((out / "eval_eval.json").read_text())
    assert report["n"] == 2 and sum(map(sum, report["confusion"])) == 2
    assert {"accuracy", "macro_f1", "per_class", "confusion"} <= set(report)

    texts = tmp_path / "texts.txt"
    texts.write_text("free cash now\n\nsee you soon\n")
    capsys.readouterr()
    run([f"--out_dir={out}", f"--predict=FILE:{texts}"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2] for line in lines] == ["free cash now", "see you soon"]
    assert all(line.split("\t")[0] in ("ham", "spam") for line in lines)


def test_chunked_texts_train_as_windows_and_score_once(tmp_path, pretrained, sms_data, capsys):
    # --truncate=chunks --max_len=8: each message is several windows of 8 characters, every one a
    # training example with its message's label, while a split scores each message once
    out = tmp_path / "out"
    run([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out}", "--truncate=chunks",
         "--max_len=8", *QUICK])
    windows = sum(math.ceil(len(t) / 8) for t in SPAM + HAM)
    printed = capsys.readouterr().out
    assert f"7 training and 7 validation examples of sms_spam ({windows} and {windows} chunks)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val"]["n"] == metrics["test"]["n"] == 7
    assert metrics["bow_baseline"]["val"]["n"] == metrics["bow_baseline"]["test"]["n"] == 7
    run([f"--out_dir={out}", f"--predict={SPAM[0]}"])  # 4 windows, one answer
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_a_run_can_score_reading_texts_another_way(tmp_path, pretrained, sms_data, capsys):
    # trained on each message's first 8 characters, scored on every window of them: a report of its own
    out = tmp_path / "out"
    run([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out}", "--max_len=8", *QUICK])
    test_file = sms_data / "test.jsonl"
    run([f"--out_dir={out}", f"--eval_file={test_file}"])
    run([f"--out_dir={out}", f"--eval_file={test_file}", "--truncate=chunks"])
    own, chunked = (json.loads((out / f"eval_test{suffix}.json").read_text()) for suffix in ("", "_chunks"))
    assert (own["truncate"], chunked["truncate"]) == ("head", "chunks")
    assert own["confusion"] == json.loads((out / "metrics.json").read_text())["test"]["confusion"]
    assert chunked["n"] == own["n"] == 7
    capsys.readouterr()
    run([f"--out_dir={out}", f"--predict={SPAM[0]}", "--truncate=chunks"])
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_members_train_with_their_own_seeds_and_predict_together(tmp_path, pretrained, sms_data):
    out = tmp_path / "out"
    run([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out}", "--members=2",
         "--dropout=0.1", "--seed=5", *QUICK])
    members = load_checkpoint(out / "best.pt")["members"]
    assert [m["config"]["seed"] for m in members] == [5, 6]
    assert [m["model_args"]["dropout"] for m in members] == [0.1, 0.1]  # the pretrained run's was 0
    assert not torch.equal(members[0]["head"]["classifier.weight"], members[1]["head"]["classifier.weight"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_iter"] == [m["iter_num"] for m in members]
    # each member saved is the one that scored its best val, not the weights after more training
    assert metrics["val_members"] == [m["val"] for m in members] and len(metrics["test_members"]) == 2
    assert metrics["trainable_params"] == 2 * members[0]["trainable_params"]

    classifier, _, _ = finetune.load_finetuned(out)
    assert isinstance(classifier, Ensemble) and len(classifier.members) == 2
    run([f"--out_dir={out}", f"--eval_file={sms_data / 'test.jsonl'}"])  # the ensemble, as training scored it
    assert json.loads((out / "eval_test.json").read_text())["confusion"] == metrics["test"]["confusion"]
    run([f"--out_dir={out}", f"--eval_file={sms_data / 'val.jsonl'}"])  # a second file keeps the first's report
    assert json.loads((out / "eval_val.json").read_text())["confusion"] == metrics["val"]["confusion"]
    assert (out / "eval_test.json").exists()
    message = bad_input_error([f"--init_from={out}", f"--data_dir={sms_data}", f"--out_dir={tmp_path / 'again'}"])
    assert "holds 2 finetuned models (--members), not one GPT" in message


def interrupt_after(monkeypatch, n_steps):
    """Make finetune.py's training stop dead, as a killed process would, when it starts step n_steps + 1."""
    real_step, calls = finetune.finetune_step, []

    def step(*args):
        if len(calls) == n_steps:
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(*args)
    monkeypatch.setattr(finetune, "finetune_step", step)


@pytest.mark.parametrize("n_steps", [3, 6, 9])  # in member 1; after member 1 ends; in member 2
def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, pretrained, sms_data, monkeypatch, n_steps):
    common = [f"--init_from={pretrained}", f"--data_dir={sms_data}", "--members=2", "--dropout=0.1",
              "--device=cpu", "--max_iters=6", "--eval_interval=2", "--batch_size=4", "--warmup_iters=1", "--learning_rate=1e-3"]
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    run(common + [f"--out_dir={reference}"])
    assert not (reference / "last.pt").exists()  # a finished run leaves nothing to resume

    with monkeypatch.context() as m:
        interrupt_after(m, n_steps)
        with pytest.raises(KeyboardInterrupt):
            run(common + [f"--out_dir={interrupted}"])
    last = load_checkpoint(interrupted / "last.pt")
    assert (last["member"], last["iter_num"]) == {3: (0, 2), 6: (0, 6), 9: (1, 2)}[n_steps]
    assert f"continue it with python finetune.py --out_dir={interrupted} --resume=True" in bad_input_error(
        common + [f"--out_dir={interrupted}"])
    assert "used --learning_rate=0.001" in bad_input_error(common + [f"--out_dir={interrupted}", "--resume=True", "--learning_rate=0.01"])

    run(common + [f"--out_dir={interrupted}", "--resume=True"])
    want, got = load_checkpoint(reference / "best.pt")["members"], load_checkpoint(interrupted / "best.pt")["members"]
    for a, b in zip(want, got, strict=True):  # the same weights, bit for bit, and the same val scores
        assert a["iter_num"] == b["iter_num"] and a["val"] == b["val"]
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert all(torch.equal(a["head"][k], b["head"][k]) for k in a["head"])
    want, got = (json.loads((d / "metrics.json").read_text()) for d in (reference, interrupted))
    assert {**want, "train_seconds": 0} == {**got, "train_seconds": 0}
    assert not (interrupted / "last.pt").exists()


def test_resume_refuses_a_run_with_an_option_that_no_longer_exists(tmp_path, pretrained, sms_data, monkeypatch):
    common = [f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={tmp_path}", "--device=cpu",
              "--max_iters=4", "--eval_interval=2", "--batch_size=4", "--warmup_iters=1"]
    with monkeypatch.context() as m:
        interrupt_after(m, 3)
        with pytest.raises(KeyboardInterrupt):
            run(common)
    last = load_checkpoint(tmp_path / "last.pt")
    last["config"]["label_smoothing"] = 0.1  # as if an older finetune.py had this option
    torch.save(last, tmp_path / "last.pt")
    message = bad_input_error(common + ["--resume=True"])
    assert "used --label_smoothing, an option this version does not have" in message


def test_resume_needs_an_interrupted_run(tmp_path, pretrained, sms_data):
    message = bad_input_error([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={tmp_path}",
                               "--resume=True"])
    assert "no interrupted run in" in message and "without --resume" in message


def test_ner_run_scores_entities_and_tags_words(tmp_path, pretrained, capsys):
    rows = [{"tokens": ["Peter", "Blackburn", "visited", "BRUSSELS"], "tags": ["B-PER", "I-PER", "O", "B-LOC"]},
            {"tokens": ["The", "European", "Union", "said"], "tags": ["O", "B-ORG", "I-ORG", "O"]}]
    for split in ("train", "val"):
        write_jsonl(tmp_path / f"{split}.jsonl", rows)
    out = tmp_path / "out"
    run(["--task=conll2003", f"--init_from={pretrained}", f"--data_dir={tmp_path}", f"--out_dir={out}", *QUICK, "--test=False"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["head"] == "token" and "test" not in metrics
    assert metrics["val"]["entities"]["overall"]["gold"] == 3  # PER, ORG, LOC
    assert metrics["val_baseline"]["entities"]["overall"]["f1"] == 1.0  # every word seen in training

    raw = tmp_path / "test.txt"  # CoNLL's own format, read by data/formats.py
    raw.write_text("-DOCSTART- O\n\nPeter B-PER\nvisited O\nBRUSSELS B-LOC\n")
    run([f"--out_dir={out}", f"--eval_file={raw}"])
    report = json.loads((out / "eval_test.json").read_text())
    assert report["entities"]["overall"]["gold"] == 2 and report["n"] == 3
    assert report["baseline"]["entities"]["overall"]["f1"] == 1.0

    capsys.readouterr()
    run([f"--out_dir={out}", "--predict=Peter  visited BRUSSELS"])
    words = capsys.readouterr().out.split()
    assert [w.rsplit("/", 1)[0] for w in words] == ["Peter", "visited", "BRUSSELS"]
    assert all(w.rsplit("/", 1)[1] in finetune.TASKS["conll2003"].labels for w in words)


@pytest.mark.parametrize("reading,head", [("twice", "token"), ("both_ways", "token_crf")])
def test_a_tagger_that_reads_another_way_is_scored_and_used_that_way(reading, head, tmp_path, pretrained):
    """--reading is the run's: --eval_file and --predict read sentences as it trained, so scoring val's
    rows again gives the val score that metrics.json holds."""
    rows = [{"tokens": ["Peter", "Blackburn", "visited", "BRUSSELS"], "tags": ["B-PER", "I-PER", "O", "B-LOC"]},
            {"tokens": ["The", "European", "Union", "said"], "tags": ["O", "B-ORG", "I-ORG", "O"]}]
    for split in ("train", "val"):
        write_jsonl(tmp_path / f"{split}.jsonl", rows)
    out = tmp_path / "out"
    run(["--task=conll2003", f"--init_from={pretrained}", f"--data_dir={tmp_path}", f"--out_dir={out}", *QUICK,
         "--test=False", f"--reading={reading}", f"--head={head}"])
    metrics = json.loads((out / "metrics.json").read_text())
    run([f"--out_dir={out}", f"--eval_file={tmp_path / 'val.jsonl'}"])
    assert json.loads((out / "eval_val.json").read_text())["confusion"] == metrics["val"]["confusion"]


def test_only_a_tagger_reads_another_way(tmp_path, pretrained, sms_data):
    with pytest.raises(UserError, match="--reading=twice is for tagging"):
        run([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={tmp_path}", "--reading=twice"])


def position_gpt(threshold, late, early):
    """A GPT whose next-character guess depends on the position alone: from position `threshold` on,
    the character `late` gets logit +5 and `early` -5; before it, the reverse; every other character 0.
    How: every block is zeroed, so the residual stream is wte[token] + wpe[position]. With n_embd = 2,
    the final LayerNorm turns any (a, b) into (1, -1) if a > b and (-1, 1) if a < b, and wpe[:, 0] =
    +-1000 makes the position decide which. lm_head, the same matrix as wte, then gives character v
    the logit +-(wte[v, 0] - wte[v, 1])."""
    tok = CharTokenizer(CHARS)
    gpt = GPT(GPTConfig(block_size=512, vocab_size=len(CHARS), n_layer=1, n_head=1, n_embd=2))
    with torch.no_grad():
        for p in gpt.transformer.h.parameters():
            p.zero_()  # a block of zeros adds nothing to the residual stream
        wte, wpe = gpt.transformer.wte.weight, gpt.transformer.wpe.weight  # (V, 2), (block_size, 2)
        wte.zero_()
        wte[tok.encode(late)] = torch.tensor([2.5, -2.5])
        wte[tok.encode(early)] = torch.tensor([-2.5, 2.5])
        wpe.zero_()
        wpe[:, 0] = torch.where(torch.arange(512) >= threshold, 1000.0, -1000.0)
    return gpt


# A rule "a long text is spam" gets five of these seven right: the short spam and the long ham fool it.
LONG_AND_SHORT = [
    {"text": "WINNER!! Claim your free cash prize now, call 0800 123 456", "label": "spam"},
    {"text": "URGENT! You have won a holiday, text CLAIM to 80082 today", "label": "spam"},
    {"text": "Your number won 1000 pounds, reply WIN to collect it now", "label": "spam"},
    {"text": "Txt WIN now", "label": "spam"},
    {"text": "see you at lunch", "label": "ham"},
    {"text": "ok, on my way", "label": "ham"},
    {"text": "can you pick up some milk and bread on your way home tonight?", "label": "ham"},
]


@pytest.mark.parametrize("shots", [0, 2])
def test_zero_and_few_shot_pick_the_likelier_verbalizer(tmp_path, shots):
    """On a model that finds " spam" the likelier answer after a long prompt and " ham" after a short
    one (position_gpt, with " spam" ahead by 10 in its "s" and " ham" in its "h"), every text over 30
    characters must be called spam and every shorter one ham, with the shots' prompt in front or not."""
    task = finetune.TASKS["sms_spam"]
    assert all(len(r["text"]) <= 20 or len(r["text"]) >= 40 for r in LONG_AND_SHORT)  # none near the threshold
    for split in ("train", "val", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", LONG_AND_SHORT)
    prefix = few_shot_prefix(task, LONG_AND_SHORT, shots, seed=0) if shots else ""
    threshold = len(prefix + task.template.format(text="x" * 30))  # where a 30-character text's prompt ends
    run_dir = save_model(tmp_path / "pre", position_gpt(threshold, late="s", early="h"), {"kind": "char", "chars": CHARS})
    run([f"--init_from={run_dir}", f"--data_dir={tmp_path}", f"--out_dir={tmp_path / 'zs'}", "--zero_shot=True",
         f"--shots={shots}", "--seed=0", "--device=cpu"])
    results = json.loads((tmp_path / "zs" / "zero_shot.json").read_text())
    assert results["shots"] == shots
    for split in ("val", "test"):
        assert results[split]["confusion"] == [[2, 1], [1, 3]]  # rows: true ham, spam; columns: predicted
        assert results[split]["accuracy"] == pytest.approx(5 / 7)


def test_calibration_divides_out_what_the_prompt_alone_favours(tmp_path, pretrained, sms_data, monkeypatch):
    """A stand-in LM that prefers " ham" after any prompt (+3) and " spam" after a text saying "free"
    (+1): uncalibrated, every text is ham; calibrated by the content-free texts, "free" decides."""
    tokenizer = CharTokenizer(CHARS)  # the pretrained fixture's
    spam_word = tokenizer.encode(" spam")

    def fake_logprobs(gpt, contexts, continuations, batch_size, device):
        texts = [tokenizer.decode(c).rsplit("Text message: ", 1)[1] for c in contexts]
        return [(1.0 if "free" in t.lower() else 0.0) if w == spam_word else 3.0 for t, w in zip(texts, continuations)]

    monkeypatch.setattr(prompting, "continuation_logprobs", fake_logprobs)
    out = tmp_path / "calibrated"
    run([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out}", "--zero_shot=True", "--device=cpu"])
    results = json.loads((out / "zero_shot.json").read_text())
    rows = [json.loads(line) for line in (sms_data / "test.jsonl").read_text().splitlines()]
    free = ["spam" if "free" in r["text"].lower() else "ham" for r in rows]
    assert 0 < free.count("spam") < len(rows)  # the split exercises both answers
    assert results["test"]["confusion"] == confusion([r["label"] for r in rows], ["ham"] * len(rows))
    assert results["test_calibrated"]["confusion"] == confusion([r["label"] for r in rows], free)
    assert results["content_free_probs"]["ham"] == pytest.approx(math.exp(3) / (math.exp(3) + 1))


def confusion(gold, predicted, labels=("ham", "spam")):
    return classification_report(gold, predicted, list(labels))["confusion"]


@pytest.mark.parametrize("truncate,expected", [
    ("head", [[0, 1, 2, 3, 4, 5, 6, 7]]),
    ("tail", [[4, 5, 6, 7, 8, 9, 10, 11]]),
    ("head_tail", [[0, 1, 6, 7, 8, 9, 10, 11]]),  # a quarter from the start, the rest from the end
    ("chunks", [[0, 1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7, 8, 9, 10, 11]]),  # the last window ends at the end
])
def test_long_texts_are_cut_as_truncate_says(truncate, expected):
    assert cut(list(range(12)), 8, truncate) == expected
    assert cut(list(range(8)), 8, truncate) == [list(range(8))]  # a text that fits is kept whole
    row = {"text": " ".join(f"w{i}" for i in range(40)), "label": "spam"}
    tokenizer = CharTokenizer(CHARS)
    examples = encode_row(row, finetune.TASKS["sms_spam"], tokenizer, 8, "row 1", truncate)
    assert [e.ids for e in examples] == cut(tokenizer.encode(row["text"]), 8, truncate)
    assert [e.chunk for e in examples] == list(range(len(examples)))
    assert all(e.row is row and e.target == 1 for e in examples)  # each chunk has its text's label


def test_chunks_cover_every_token_in_full_windows():
    ids = list(range(20))
    chunks = cut(ids, 8, "chunks")
    assert chunks == [ids[0:8], ids[8:16], ids[12:20]]
    assert cut(list(range(16)), 8, "chunks") == [list(range(8)), list(range(8, 16))]  # no overlap needed


def test_a_chunked_text_is_scored_by_its_chunks_mean_probability():
    # two texts: the first in three chunks, the second whole; a chunk's probabilities are set by its first token
    row_a, row_b = {"text": "a", "label": "spam"}, {"text": "b", "label": "ham"}
    examples = [Example(row_a, [0], 1, chunk=0), Example(row_a, [1], 1, chunk=1), Example(row_a, [2], 1, chunk=2),
                Example(row_b, [3], 0)]
    spam = torch.tensor([0.9, 0.2, 0.3, 0.1])  # chunk 0 says spam, the others ham: the mean 0.467 says ham

    class FirstToken(nn.Module):
        def forward(self, idx, mask):
            p = spam[idx[:, 0]]
            return torch.stack([1 - p, p], dim=-1).log()  # (B, 2)

    report = evaluate(FirstToken(), examples, ("ham", "spam"), 2, "cpu", contextlib.nullcontext())
    assert report["confusion"] == confusion(["spam", "ham"], ["ham", "ham"])  # two texts, not four chunks
    probs, firsts = per_text([torch.tensor([1 - p, p]) for p in spam.tolist()], examples)
    assert firsts == [examples[0], examples[3]]
    assert probs[0][1].item() == pytest.approx((0.9 + 0.2 + 0.3) / 3) and probs[1][1].item() == pytest.approx(0.1)
    assert texts(examples) == [row_a, row_b]


def test_few_shot_prompt_shows_every_label():
    task = finetune.TASKS["sms_spam"]
    rows = [{"text": f"h{i}", "label": "ham"} for i in range(9)] + [{"text": "s0", "label": "spam"}]
    prefix = few_shot_prefix(task, rows, 2, seed=0)
    assert prefix.count(" ham\n\n") == 1 and prefix.count(" spam\n\n") == 1 and "s0" in prefix


# ----------------------------------------------------------------------------- bad input


def bad_input_error(argv):
    with pytest.raises(UserError) as e:
        run(argv)
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("row,expected", [
    ({"label": "ham"}, r"train.jsonl:2: missing column 'text'"),
    ({"text": "hello"}, r"train.jsonl:2: missing column 'label'"),
    ({"text": "hello", "label": "eggs"}, r"train.jsonl:2: unknown label 'eggs'"),
    ({"text": "   ", "label": "ham"}, r"train.jsonl:2: empty text"),
    ({"text": ["a list"], "label": "ham"}, r"train.jsonl:2: text must be a string, got list"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, pretrained, row, expected):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "fine", "label": "ham"}, row])
    message = bad_input_error([f"--init_from={pretrained}", f"--data_dir={tmp_path}", f"--out_dir={tmp_path / 'o'}"])
    assert expected in message


def test_invalid_json_names_the_line(tmp_path, pretrained):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "ham"}\n{"text": \n')
    message = bad_input_error([f"--init_from={pretrained}", f"--data_dir={tmp_path}", f"--out_dir={tmp_path / 'o'}"])
    assert "train.jsonl:2: not valid JSON" in message


@pytest.mark.parametrize("option,expected", [
    ("--head=cls", "unknown head 'cls'"),
    ("--train=half", "--train must be one of full, head, last_n, lora, adapter, prefix, got 'half'"),
    ("--lora_rank=0", "--lora_rank must be at least 1"),
    ("--lora_targets=attn.c_attn,attn.q", "no layer 'attn.q' in a GPT block"),
    ("--head=token", "--head=token does not fit sms_spam"),
    ("--task=mnist", "--task must be one of"),
    ("--members=0", "--members must be at least 1"),
    ("--dropout=1", "--dropout must be in [0, 1)"),
])
def test_bad_options(option, expected):
    assert expected in bad_input_error([option])


def test_char_checkpoint_for_a_bpe_sized_model_is_refused(tmp_path, sms_data):
    run_dir = save_run(tmp_path / "char", 50257, {"kind": "char", "chars": "abc"})
    message = bad_input_error([f"--init_from={run_dir}", f"--data_dir={sms_data}", f"--out_dir={tmp_path / 'o'}"])
    assert "50257 token embeddings but its tokenizer 3 tokens" in message


def test_text_the_char_tokenizer_cannot_encode_names_the_line(tmp_path, sms_data):
    chars = "".join(sorted(set("".join(HAM[:2]))))  # every character of the first row, not of the rest
    run_dir = save_run(tmp_path / "char", len(chars), {"kind": "char", "chars": chars})
    write_jsonl(tmp_path / "train.jsonl", [{"text": HAM[0], "label": "ham"}, {"text": SPAM[0], "label": "spam"}])
    message = bad_input_error([f"--init_from={run_dir}", f"--data_dir={tmp_path}", f"--out_dir={tmp_path / 'o'}"])
    assert "train.jsonl:2:" in message and "characters outside the tokenizer" in message


def test_empty_eval_file(tmp_path, pretrained, sms_data):
    out = tmp_path / "out"
    run([f"--init_from={pretrained}", f"--data_dir={sms_data}", f"--out_dir={out}", *QUICK[:2]])
    (tmp_path / "empty.jsonl").write_text("\n")
    assert "empty.jsonl: no examples" in bad_input_error([f"--out_dir={out}", f"--eval_file={tmp_path / 'empty.jsonl'}"])


def test_a_pretrained_run_is_not_a_finetuned_one(pretrained):
    assert "is a pretrained model, not a finetuned one" in bad_input_error([f"--out_dir={pretrained}", "--predict=hi"])


def test_init_from_nowhere(tmp_path):
    assert "--init_from=" in bad_input_error([f"--init_from={tmp_path / 'nothing'}"])


def test_the_command_line_prints_one_line_and_exits_2():
    result = subprocess.run([sys.executable, "finetune.py", "--train=half"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --train must be one of") and result.stderr.count("\n") == 1


def test_bench_table_runs_each_cell_once(tmp_path, pretrained, sms_data):
    config = tmp_path / "finetune_tiny.py"
    config.write_text(f"task = 'sms_spam'\ndata_dir = {str(sms_data)!r}\nbatch_size = 4\nwarmup_iters = 1\n"
                      "members = 3\n")  # the table still trains one model per cell
    argv = [f"--config={config}", f"--inits={pretrained}", "--modes=head", "--heads=last,mean",
            "--max_iters=2", "--device=cpu", f"--out_dir={tmp_path / 'bench'}"]
    bench_finetune.main(argv)
    rows = [line for line in (tmp_path / "bench" / "table.md").read_text().splitlines() if line.startswith(f"| {pretrained}")]
    assert [row.split(" | ")[1:3] for row in rows] == [["head", "last"], ["head", "mean"]]
    saved = tmp_path / "bench" / "run-head-last" / "best.pt"
    assert "members" not in load_checkpoint(saved)
    before = saved.stat().st_mtime_ns
    bench_finetune.main(argv)  # a finished cell is read back, not trained again
    assert saved.stat().st_mtime_ns == before


def test_bench_table_resumes_an_interrupted_cell(tmp_path, pretrained, sms_data, monkeypatch):
    """A cell interrupted halfway (its last.pt is there) goes on with --resume=True, not from the start."""
    config = tmp_path / "finetune_tiny.py"
    config.write_text(f"task = 'sms_spam'\ndata_dir = {str(sms_data)!r}\nbatch_size = 4\nwarmup_iters = 1\n"
                      "eval_interval = 2\n")
    cell = tmp_path / "bench" / "run-full-mean"
    with monkeypatch.context() as m:
        interrupt_after(m, 3)  # 3 of the cell's 4 steps, after its evaluation at 2
        with pytest.raises(KeyboardInterrupt):
            finetune.main([str(config), f"--init_from={pretrained}", "--train=full", "--head=mean", f"--out_dir={cell}",
                           "--device=cpu", "--max_iters=4", "--max_train=0", "--members=1"])
    assert load_checkpoint(cell / "last.pt")["iter_num"] == 2
    bench_finetune.main([f"--config={config}", f"--inits={pretrained}", "--modes=full", "--heads=mean",
                         "--max_iters=4", "--device=cpu", f"--out_dir={tmp_path / 'bench'}"])
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["iters"] == 4 and not (cell / "last.pt").exists()


def test_gpt_and_bag_of_words_combine_with_a_weight_val_chooses():
    """Each model is sure where it is right and unsure where it is wrong: their average is right where
    either alone errs. The weight comes from val's labels alone; test's can't move it."""
    labels = ["negative", "positive"]
    sure, unsure = torch.tensor([0.9, 0.1]), torch.tensor([0.4, 0.6])  # both say "negative" is the truth
    gpt = {"val": [sure, unsure], "test": [sure, unsure]}  # right on text 0, wrong on text 1
    bow = {name: torch.stack([unsure, sure]) for name in gpt}  # wrong on text 0, right on text 1
    rows = {name: [{"label": "negative"}, {"label": "negative"}] for name in gpt}
    combined = combine(gpt, bow, rows, labels)
    assert 0 < combined["gpt_weight"] < 1 and combined["val"]["accuracy"] == combined["test"]["accuracy"] == 1.0
    flipped = {"val": rows["val"], "test": [{"label": "positive"}, {"label": "positive"}]}
    assert combine(gpt, bow, flipped, labels)["gpt_weight"] == combined["gpt_weight"]
