"""
The linear-chain CRF (finetuning/crf.py) against a brute-force enumeration of every tag sequence;
the token_crf head (heads.py) trained and decoded through it (evaluate.py); and the feature-CRF
baseline (finetuning/feature_crf.py): its features by hand, a vocabulary from train alone, a
separable task learned perfectly, a penalty that val only chooses, and its place in metrics.json.

    python -m pytest tests/test_crf.py -q
"""

import contextlib
import dataclasses
import itertools
import random

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close, spread_weights, tiny_gpt
from finetune import Classifier
from finetuning import feature_crf
from finetuning.crf import CRF
from finetuning.evaluate import combine_tags, crf_of, evaluate, predict_probs, predicted_labels, score_run
from finetuning.heads import build_head
from finetuning.metrics import headline, score
from finetuning.tagging import align_word_labels
from finetuning.tasks import TASKS, Example
from model import masked_cross_entropy

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def valid_iob2(tags):
    """No I-X starts a sentence or follows anything but B-X or I-X."""
    return all(not t.startswith("I-") or (i > 0 and tags[i - 1] in ("B-" + t[2:], t)) for i, t in enumerate(tags))


def random_crf(seed, n_labels, std=1.0):
    """A float64 CRF whose scores are drawn wide: zero transitions would hide a transposed index."""
    crf = CRF(n_labels).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(std * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return crf


def sequence_score(crf, emissions, tags):
    """The score of one sentence's tag sequence, written out word by word from the formula in crf.py."""
    E, A = emissions.tolist(), crf.transitions.tolist()
    total = crf.start[tags[0]].item() + E[0][tags[0]] + crf.end[tags[-1]].item()
    for k in range(1, len(tags)):
        total += A[tags[k - 1]][tags[k]] + E[k][tags[k]]
    return total


def every_sequence(crf, emissions):
    """All L^n tag sequences of a sentence (n, L), and their scores (L^n,)."""
    n, L = emissions.shape
    sequences = list(itertools.product(range(L), repeat=n))
    return sequences, torch.tensor([sequence_score(crf, emissions, s) for s in sequences], dtype=torch.float64)


def one_sentence(emissions):
    """A batch of one sentence: emissions (n, L) -> (1, n, L), and its mask (1, n)."""
    return emissions.unsqueeze(0), torch.ones(1, len(emissions), dtype=torch.bool)


# ----------------------------------------------------------------------------- the CRF against brute force

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n_words", [1, 2, 4])
def test_log_partition_and_score_equal_brute_force(seed, n_words):
    crf = random_crf(seed, len(TAGS))
    emissions = 2 * torch.randn(n_words, len(TAGS), generator=torch.Generator().manual_seed(100 + seed),
                                dtype=torch.float64)
    sequences, scores = every_sequence(crf, emissions)
    assert_close(crf.log_partition(*one_sentence(emissions)), torch.logsumexp(scores, 0).reshape(1), 1e-10,
                 f"log Z, {n_words} words")
    picked = [0, len(sequences) // 2, len(sequences) - 1]
    E, mask = one_sentence(emissions)
    for k in picked:
        tags = torch.tensor([sequences[k]])  # (1, n)
        assert_close(crf.score(E, tags, mask), scores[k].reshape(1), 1e-10, f"score of {sequences[k]}")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_words", [1, 2, 4])
def test_viterbi_is_the_best_valid_sequence(seed, n_words):
    """Wide transitions make the unconstrained best path often invalid: Viterbi must find the best valid one."""
    crf = random_crf(seed, len(TAGS), std=3.0)
    emissions = 3 * torch.randn(n_words, len(TAGS), generator=torch.Generator().manual_seed(200 + seed),
                                dtype=torch.float64)
    sequences, scores = every_sequence(crf, emissions)
    valid = [k for k, s in enumerate(sequences) if valid_iob2([TAGS[i] for i in s])]
    best_valid = max(valid, key=lambda k: scores[k])
    assert crf.viterbi(*one_sentence(emissions), TAGS) == [list(sequences[best_valid])]


def test_tags_without_prefixes_are_not_constrained():
    labels = ["NOUN", "VERB", "ADJ"]
    crf = random_crf(7, len(labels), std=3.0)
    emissions = torch.randn(4, len(labels), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    sequences, scores = every_sequence(crf, emissions)
    assert crf.viterbi(*one_sentence(emissions), labels) == [list(sequences[scores.argmax()])]


def test_constraints_by_hand():
    """O, B-PER, I-PER; two words whose emissions say I-PER, and a learned O -> I-PER that says so too."""
    labels = ["O", "B-PER", "I-PER"]
    crf = CRF(3).double()
    with torch.no_grad():
        crf.transitions[0, 2] = 10.0  # O -> I-PER, learned high, yet forbidden
    emissions = torch.tensor([[0.0, 1.0, 5.0],  # I-PER first is forbidden
                              [0.0, 0.0, 3.0]], dtype=torch.float64)
    # valid paths: B-PER I-PER scores 1 + 3 = 4, the best; O I-PER (0 + 10 + 3) and I-PER I-PER (8) are not valid
    assert crf.viterbi(*one_sentence(emissions), labels) == [[1, 2]]
    assert crf.viterbi(*one_sentence(emissions[:1]), labels) == [[1]]  # one word: B-PER, not I-PER
    with torch.no_grad():
        crf.end[2] = -5.0  # ending on I-PER now costs 5: O O scores 0, B-PER I-PER -1, B-PER O 1
    assert crf.viterbi(*one_sentence(emissions), labels) == [[1, 0]]


@pytest.mark.parametrize("seed", range(2))
def test_gradients_are_marginals_and_expected_counts(seed):
    """d log Z / d emissions[t, j] is P(tag t = j), and d nll / d transitions[i, j] is the expected
    number of i -> j steps less the gold sequence's: both summed over every sequence by brute force."""
    n_words = 3
    crf = random_crf(seed, len(TAGS))
    emissions = torch.randn(n_words, len(TAGS), generator=torch.Generator().manual_seed(300 + seed),
                            dtype=torch.float64, requires_grad=True)
    gold = [1, 2, 0]
    E, mask = one_sentence(emissions)
    nll = crf.nll(E, torch.tensor([gold]), mask)  # (1,)
    nll.sum().backward()
    sequences, scores = every_sequence(crf, emissions.detach())
    p = torch.softmax(scores, 0)  # (L^n,) each sequence's probability
    marginals = torch.zeros(n_words, len(TAGS), dtype=torch.float64)
    counts = torch.zeros(len(TAGS), len(TAGS), dtype=torch.float64)
    for prob, s in zip(p, sequences):
        for t in range(n_words):
            marginals[t, s[t]] += prob
        for a, b in zip(s, s[1:]):
            counts[a, b] += prob
    gold_counts = torch.zeros_like(counts)
    for a, b in zip(gold, gold[1:]):
        gold_counts[a, b] += 1
    gold_onehot = F.one_hot(torch.tensor(gold), len(TAGS)).double()
    assert_close(emissions.grad, marginals - gold_onehot, 1e-10, "d nll / d emissions")
    assert_close(crf.transitions.grad, counts - gold_counts, 1e-10, "d nll / d transitions")
    expected_nll = torch.logsumexp(scores, 0) - sequence_score(crf, emissions.detach(), gold)
    assert_close(nll, expected_nll.reshape(1), 1e-10, "nll")


def test_padding_changes_nothing():
    """A right-padded batch gives each sentence the log Z, score, nll and path it has alone, whatever
    fills the padding (here huge emissions and arbitrary tags)."""
    g = torch.Generator().manual_seed(4)
    crf = random_crf(4, len(TAGS), std=2.0)
    lengths = [3, 1, 5, 2]
    T = max(lengths)
    emissions = 100 * torch.randn(len(lengths), T, len(TAGS), generator=g, dtype=torch.float64)  # padding: huge
    tags = torch.randint(0, len(TAGS), (len(lengths), T), generator=g)
    mask = torch.arange(T) < torch.tensor(lengths).unsqueeze(1)  # (B, T)
    for b, n in enumerate(lengths):
        emissions[b, :n] = 2 * torch.randn(n, len(TAGS), generator=g, dtype=torch.float64)
    tags[1, 1:] = -1  # padding tags may be anything, even -1 as the head's targets are
    batched = [crf.log_partition(emissions, mask), crf.score(emissions, tags, mask), crf.nll(emissions, tags, mask)]
    paths = crf.viterbi(emissions, mask, TAGS)
    for b, n in enumerate(lengths):
        E, m = one_sentence(emissions[b, :n])
        alone = [crf.log_partition(E, m), crf.score(E, tags[b : b + 1, :n], m), crf.nll(E, tags[b : b + 1, :n], m)]
        for what, x, y in zip(("log Z", "score", "nll"), batched, alone):
            assert_close(x[b : b + 1], y, 1e-10, f"{what} of row {b} in the batch vs alone")
        assert paths[b] == crf.viterbi(E, m, TAGS)[0] and len(paths[b]) == n


def test_zero_scores_make_the_nll_the_words_cross_entropies():
    emissions = torch.randn(2, 3, len(TAGS), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    tags = torch.tensor([[1, 2, 0], [3, 0, 0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    cross_entropies = F.cross_entropy(emissions.transpose(1, 2), tags, reduction="none") * mask  # (B, T)
    assert_close(CRF(len(TAGS)).double().nll(emissions, tags, mask), cross_entropies.sum(1), 1e-10,
                 "nll of a zero CRF")


def test_a_gold_sequence_that_breaks_iob2_still_trains():
    """Training sums over every sequence: a badly tagged sentence (O I-PER) gives a finite loss and gradient."""
    crf = random_crf(6, len(TAGS))
    emissions = torch.randn(1, 2, len(TAGS), dtype=torch.float64, requires_grad=True)
    nll = crf.nll(emissions, torch.tensor([[0, 2]]), torch.ones(1, 2, dtype=torch.bool))
    nll.sum().backward()
    assert torch.isfinite(nll).all() and torch.isfinite(emissions.grad).all()


# ----------------------------------------------------------------------------- the token_crf head

def head_batch():
    """Logits (2, 6, L) of two rows: row 0 has three words, the second of two pieces; row 1 two words
    then padding. Targets are -1 at later pieces and at padding, as tasks.collate makes them."""
    logits = 2 * torch.randn(2, 6, len(TAGS), generator=torch.Generator().manual_seed(8))
    targets = torch.tensor([[1, 2, -1, 0, -1, -1],  # words at 0, 1, 3 (position 2 is word 1's second piece)
                            [3, 4, -1, -1, -1, -1]])
    return logits, targets, [[0, 1, 3], [0, 1]]


def test_token_crf_loss_is_the_nll_of_each_rows_words_in_order():
    head = build_head("token_crf", 8, len(TAGS))
    with torch.no_grad():
        for p in head.crf.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(9)))  # asymmetric: order matters
    logits, targets, words = head_batch()
    crf64 = CRF(len(TAGS)).double()
    crf64.load_state_dict(head.crf.state_dict())
    total = 0.0
    for row, positions in enumerate(words):
        emissions = logits[row, positions].double()  # (n, L)
        _, scores = every_sequence(crf64, emissions)
        gold = targets[row, positions].tolist()
        total += torch.logsumexp(scores, 0).item() - sequence_score(crf64, emissions, gold)
    expected = torch.tensor(total / 5)  # per word: five words in all
    assert_close(head.loss(logits, targets), expected, 1e-5, "token_crf loss vs brute force")


def test_token_crf_starts_as_the_token_heads_cross_entropy():
    """At zero transitions the CRF's loss per word is the token head's: the same learning rates suit both."""
    crf_head, token_head = build_head("token_crf", 8, len(TAGS)), build_head("token", 8, len(TAGS))
    logits, targets, _ = head_batch()
    assert_close(crf_head.loss(logits, targets), token_head.loss(logits, targets), 1e-5, "token_crf vs token loss")
    assert_close(token_head.loss(logits, targets), masked_cross_entropy(logits, targets), 1e-7, "token loss")


class SmallIds:
    """A toy tokenizer for tiny_gpt (37 ids): pieces of at most three characters, each id a sum of bytes."""

    def encode(self, text):
        return [sum(text[i : i + 3].encode()) % 37 for i in range(0, len(text), 3)]


def tagged_examples(rows):
    tokenizer = SmallIds()
    examples = []
    for row in rows:
        ids, targets, first_pieces = align_word_labels(tokenizer, row["tokens"], [TAGS.index(t) for t in row["tags"]])
        examples.append(Example(row, ids, targets, first_pieces))
    return examples


def test_evaluate_decodes_a_token_crf_head_with_its_crf():
    """The tags evaluate scores are the brute-force best valid sequence of the head's emissions at each
    word's first piece plus the CRF's scores; with other transitions they would differ."""
    torch.manual_seed(0)
    head = spread_weights(build_head("token_crf", 32, len(TAGS)), 10)
    with torch.no_grad():
        head.crf.transitions.mul_(30)  # wide transitions: they decide many tags
    classifier = Classifier(tiny_gpt(seed=11), head).eval()
    rows = [{"tokens": ["Anna", "met", "Bob"], "tags": ["B-PER", "O", "B-PER"]},
            {"tokens": ["in", "Rome"], "tags": ["O", "B-LOC"]},
            {"tokens": ["Li"], "tags": ["B-PER"]},
            {"tokens": ["ok", "Sir", "Jo", "Ma"], "tags": ["O", "O", "B-PER", "I-PER"]}]
    examples = tagged_examples(rows)
    crf = CRF(len(TAGS)).double()
    crf.load_state_dict(head.crf.state_dict())
    expected, without_crf = [], []
    with torch.no_grad():
        for e in examples:
            emissions = classifier(torch.tensor([e.ids]), torch.ones(1, len(e.ids), dtype=torch.bool))[0]  # (T, L)
            emissions = emissions[e.first_pieces].double()  # (n_words, L)
            sequences, scores = every_sequence(crf, emissions)
            valid = [k for k, s in enumerate(sequences) if valid_iob2([TAGS[i] for i in s])]
            expected.append([TAGS[i] for i in sequences[max(valid, key=lambda k: scores[k])]])
    probs = predict_probs(classifier, examples, 2, "cpu", contextlib.nullcontext())
    assert predicted_labels(probs, examples, TAGS, crf_of(classifier)) == expected
    assert predicted_labels(probs, examples, TAGS) != expected  # the transitions matter here
    report = evaluate(classifier, examples, TAGS, 2, "cpu", contextlib.nullcontext())
    assert report == score([r["tags"] for r in rows], expected, TAGS)


# ----------------------------------------------------------------------------- the feature-CRF baseline

def test_shapes_by_hand():
    shapes = {"Peter": "Xxxxx", "12-34": "dd-dd", "1996-08-22": "dddd-dd-dd", "U.S.": "X.X.",
              "McDonald's": "XxXxxxx'x", "Blackburn": "Xxxxx", "ABCDEFG": "XXXX", "a": "x"}
    assert {word: feature_crf.shape(word) for word in shapes} == shapes


def test_word_features_by_hand():
    words = ["EU", "rejects", "German", "call"]
    assert feature_crf.word_features(words, 0) == [
        "word=EU", "lower=eu", "prefix3=EU", "suffix3=EU", "suffix2=EU", "shape=XX", "upper", "BOS",
        "+1:lower=rejects", "+1:shape=xxxx", "+2:lower=german", "+2:shape=Xxxxx", "+2:title"]
    assert feature_crf.word_features(words, 2) == [
        "word=German", "lower=german", "prefix3=Ger", "suffix3=man", "suffix2=an", "shape=Xxxxx", "title",
        "-2:lower=eu", "-2:shape=XX", "-1:lower=rejects", "-1:shape=xxxx", "+1:lower=call", "+1:shape=xxxx"]
    assert feature_crf.word_features(["1996", "."], 0)[5:] == [
        "shape=dddd", "digit", "BOS", "+1:lower=.", "+1:shape=."]
    assert feature_crf.word_features(["Hi"], 0)[6:] == ["title", "BOS", "EOS"]


def test_vocabulary_comes_from_train_rows_only():
    train = [{"tokens": ["Rome", "is", "big"], "tags": ["B-LOC", "O", "O"]},
             {"tokens": ["Paris", "is", "old"], "tags": ["B-LOC", "O", "O"]}]
    once = feature_crf.Features(train, min_count=1)
    twice = feature_crf.Features(train, min_count=2)
    assert "word=Rome" in once.index and "word=Rome" not in twice.index  # seen once
    assert "word=is" in twice.index and "-1:lower=rome" not in twice.index
    assert set(twice.index) < set(once.index)
    assert len(once) == len({f for r in train for i in range(3) for f in feature_crf.word_features(r["tokens"], i)})
    # a val word's features that train never saw have no id; a word with none known gets an empty list
    known = {f for f, k in once.index.items() if k in once.ids(["Zanzibar", "is"])[0]}
    assert known == {"shape=Xxxxx", "title", "BOS", "+1:lower=is", "+1:shape=xx"}
    assert once.ids(["x", "??", "y"])[1] == []


def toy_rows(n, seed):
    """Sentences of filler words, person names (some two words long: B-PER I-PER) and cities (B-LOC):
    each tag follows from the word and the one before it."""
    rng = random.Random(seed)
    filler = ["the", "talks", "with", "said", "on", "a", "visit", "to", "then", "left"]
    first, last, cities = ["Anna", "Bob", "Carla", "Dan"], ["Smith", "Jones"], ["Rome", "Oslo", "Lima"]
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            if kind < 0.2:
                tokens.append(rng.choice(first))
                tags.append("B-PER")
                if rng.random() < 0.5:
                    tokens.append(rng.choice(last))
                    tags.append("I-PER")
            elif kind < 0.35:
                tokens.append(rng.choice(cities))
                tags.append("B-LOC")
            else:
                tokens.append(rng.choice(filler))
                tags.append("O")
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def test_separable_task_is_learned_perfectly():
    train, val, test = toy_rows(60, seed=1), toy_rows(20, seed=2), toy_rows(40, seed=3)
    _, reports = feature_crf.feature_crf_baseline(train, {"val": val, "test": test}, TAGS)
    for name in ("val", "test"):
        assert reports[name]["accuracy"] == 1.0 and reports[name]["entities"]["overall"]["f1"] == 1.0
    assert set(reports["test"]["entities"]["per_type"]) == {"PER", "LOC"}
    assert reports["test"]["n"] == sum(len(r["tokens"]) for r in test)


def test_val_labels_only_choose_the_penalty():
    """The weights for a penalty are the same whatever val's tags; val picks the penalty it scores best."""
    train, val = toy_rows(40, seed=1), toy_rows(20, seed=2)
    wrong = [{"tokens": r["tokens"], "tags": ["B-LOC"] * len(r["tokens"])} for r in val]
    a, _ = feature_crf.fit(train, val, TAGS, l2_grid=(1e-3,))
    b, _ = feature_crf.fit(train, wrong, TAGS, l2_grid=(1e-3,))
    for (name, x), y in zip(a.tagger.state_dict().items(), b.tagger.state_dict().values()):
        assert torch.equal(x, y), name
    model, val_reports = feature_crf.fit(train, val, TAGS, l2_grid=(30.0, 1e-3))
    assert list(val_reports) == [30.0, 1e-3]
    assert model.l2 == max(val_reports, key=lambda l2: val_reports[l2]["entities"]["overall"]["f1"])
    assert val_reports[1e-3]["entities"]["overall"]["f1"] > val_reports[30.0]["entities"]["overall"]["f1"]


def test_a_tagging_runs_metrics_hold_the_feature_crf_baseline():
    """score_run fits the baseline once, on the run's own training rows, and scores it on each split."""
    torch.manual_seed(0)
    classifier = Classifier(tiny_gpt(seed=12), spread_weights(build_head("token", 32, len(TAGS)), 13)).eval()
    train, val, test = (tagged_examples(toy_rows(n, seed)) for n, seed in ((30, 1), (10, 2), (10, 3)))
    members = [{"trainable_params": 1, "total_params": 2, "max_iters": 3, "iter_num": 3}]
    task = dataclasses.replace(TASKS["conll2003"], labels=tuple(TAGS))
    metrics = score_run(classifier, members, {"val": val, "test": test}, train, task, 4, "cpu",
                        contextlib.nullcontext())
    rows = {name: [e.row for e in examples] for name, examples in (("val", val), ("test", test))}
    assert metrics["feature_crf_baseline"] == feature_crf.feature_crf_baseline([e.row for e in train], rows, TAGS)[1]
    assert metrics["feature_crf_baseline"]["test"]["entities"]["overall"]["f1"] == 1.0
    assert "val_baseline" in metrics and "bow_baseline" not in metrics
    assert set(metrics["gpt_plus_features"]) == {"gpt_weight", "val", "test"}


def test_another_taggers_scores_decode_beside_the_features():
    """Every word is the same string, so the features alone can't tell the tags apart; with another
    tagger's scores added (weight chosen on val) the CRF tags what that tagger knows, keeping IOB2 valid;
    a weight of 0 is the feature CRF alone."""
    rng = random.Random(0)
    def rows_and_scores(n):
        rows, scores = [], []
        for _ in range(n):
            tags = [rng.choice(["O", "B-LOC"]) for _ in range(rng.randint(1, 5))]
            rows.append({"tokens": ["w"] * len(tags), "tags": tags})
            scores.append(torch.tensor([[0.0, -9, -9, -9, -9] if tag == "O" else [-9, -9, -9, 0.0, -9] for tag in tags]))
        return rows, scores
    (train, _), (val, val_scores), (test, test_scores) = rows_and_scores(60), rows_and_scores(20), rows_and_scores(20)
    crf, reports = feature_crf.feature_crf_baseline(train, {"val": val, "test": test}, TAGS)
    assert headline(reports["test"]) < 0.8
    combined = combine_tags(crf, {"val": val_scores, "test": test_scores}, {"val": val, "test": test})
    assert combined["gpt_weight"] > 0 and headline(combined["test"]) == 1.0
    zero = crf.predict(test, [0.0 * s for s in test_scores])
    assert zero == crf.predict(test)
